"""Model registry: a name → how to build the network, prepare its input, and name its layers.

To add a model, write one module in ``sparsealign/models/`` that calls
``register(ModelSpec(...))`` at import; :func:`get_model` and :func:`list_models` import
every module of the package once, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from sparsealign.errors import fail

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


_REGISTRY: dict[str, ModelSpec] = {}
_NOT_MODEL_MODULES = {"registry"}
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


def get_model(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` called ``name``."""
    _discover()
    if name not in _REGISTRY:
        raise fail(f"model {name!r}", "not registered", f"one of {list_models()}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _discover()
    return sorted(_REGISTRY)
