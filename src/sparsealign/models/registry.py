"""Model registry: a name → how to build the network, prepare its input, and name its layers.

A model is found, in this order, as:

- ``module:function`` (a config's ``model: my_lab.nets:build_spec``): the function is called
  with no arguments and returns a :class:`ModelSpec`; the module must be importable (on
  ``PYTHONPATH``, or in the directory you run from);
- a built-in: a module in ``sparsealign/models/`` that calls ``register(ModelSpec(...))``
  at import (every module of the package but those in :data:`_NOT_MODEL_MODULES` is
  imported once, by any lookup: every Snakefile parse lists the models' mirror files);
- an entry point of the group ``sparsealign.models`` of any installed package, whose
  object is a :class:`ModelSpec` or a function returning one.

Nothing else needs editing to add a model.

A built-in spec module must not import torch (or any other heavy package) at import time:
it holds the constants, the layer names and the ``register`` call, and its ``build`` and
``preprocess`` are small functions that import the network's code (in
:mod:`sparsealign.networks`) when called. ``tests/test_models_registry.py`` checks this.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from sparsealign.errors import SparsealignError, fail

if TYPE_CHECKING:
    import numpy
    import torch


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """Registry name, used in config files and as the ``source`` attr of activation stores."""
    build: Callable[[], "torch.nn.Module"]
    """Returns the network in eval mode with its trained weights loaded."""
    preprocess: Callable[[Sequence["numpy.ndarray"]], "torch.Tensor"]
    """Turns a list of H×W×3 uint8 RGB images into the network's input batch."""
    layers: dict[str, str] = field(default_factory=dict)
    """Friendly layer name → dotted module path inside the built network."""
    description: str = ""
    """One line: what the network is and where its weights come from."""
    mirror_files: tuple = ()
    """Files of the data mirror that ``build`` reads (verified before a run starts)."""


_REGISTRY: dict[str, ModelSpec] = {}
_NOT_MODEL_MODULES = {"registry", "toy"}
"""Modules of the package that register no model (``toy`` trains the toy models, with torch)."""
_discovered = False


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry; a second spec under the same name is an error."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise fail(f"model {spec.name!r}", "registered twice", "one ModelSpec per name")
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> None:
    global _discovered
    if not _discovered:
        import sparsealign.models as package

        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in _NOT_MODEL_MODULES:
                importlib.import_module(f"{package.__name__}.{module.name}")
        _discovered = True


ENTRY_POINT_GROUP = "sparsealign.models"


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _as_spec(obj, origin: str) -> ModelSpec:
    spec = obj() if callable(obj) and not isinstance(obj, ModelSpec) else obj
    if not isinstance(spec, ModelSpec):
        raise fail(origin, f"gave a {type(spec).__name__}",
                   "a sparsealign.models.ModelSpec (or a function returning one)")
    return spec


def _from_reference(reference: str) -> ModelSpec:
    module_name, _, function = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(f"model {reference!r}", f"cannot import {module_name} ({exc})",
                   "a module on PYTHONPATH or in the directory you run from") from None
    if not hasattr(module, function):
        raise fail(f"model {reference!r}", f"{module_name} has no {function!r}",
                   "module:function returning a ModelSpec")
    return _as_spec(getattr(module, function), f"model {reference!r}")


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``: ``module:function``, built-in, or entry point."""
    if ":" in name:
        return _from_reference(name)
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    plugins = _entry_points()
    if name in plugins:
        return _as_spec(plugins[name].load(), f"entry point {name!r} ({plugins[name].value})")
    raise fail(f"model {name!r}", "not registered", f"one of {list_models()} or module:function")


def list_models() -> list[str]:
    """Names of all built-in and entry-point models, sorted."""
    _discover()
    return sorted(set(_REGISTRY) | set(_entry_points()))


def mirror_files(name: str) -> list[str]:
    """Data-mirror files the model ``name`` reads; a model that cannot be found reads none."""
    try:
        return list(get_model(name).mirror_files)
    except SparsealignError:
        return []
