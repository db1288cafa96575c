"""Activations of named layers of any ``torch.nn.Module`` → one activations store per layer.

Forward hooks capture each requested module's output batch by batch under
``torch.no_grad``; each output of shape (N, C, *spatial) is reduced to (N, units):

- ``"center"``: the C channels at the centre position (index ``size // 2`` on every
  spatial axis), i.e. units with a common receptive field, as in Longon et al. (2025);
- ``"mean"``: the C channels averaged over all spatial positions;
- ``"flatten"``: all C × spatial values, in (C, *spatial) order.

Outputs of shape (N, C) are kept as they are. Units are named ``<layer>/<index:05d>``.
A hooked module must run once per forward pass: one that runs twice (a ReLU reused
inside a block) is ambiguous and an error; hook a module that runs once instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sparsealign import schema
from sparsealign.errors import fail

REDUCTIONS = ("center", "mean", "flatten")


class _LayersDone(Exception):
    """Raised by the last hook of a pass with ``stop_early``: the rest is not needed."""


def reduce_activation(output, reduction: str):
    """Reduce a (N, C, *spatial) tensor to (N, units); (N, C) passes through.

    Parameters
    ----------
    output : torch.Tensor
    reduction : {"center", "mean", "flatten"}
    """
    if output.ndim == 2:
        return output
    if reduction == "center":
        centre = (slice(None), slice(None)) + tuple(size // 2 for size in output.shape[2:])
        return output[centre]
    if reduction == "mean":
        return output.mean(dim=tuple(range(2, output.ndim)))
    if reduction == "flatten":
        return output.flatten(1)
    raise fail("reduction", f"unknown reduction {reduction!r}", f"one of {REDUCTIONS}")


def resolve_layers(model, layers: dict[str, str]) -> dict:
    """Friendly layer name → the module at its dotted path in ``model``."""
    modules = dict(model.named_modules())
    resolved = {}
    for name, path in layers.items():
        if path not in modules:
            options = [n for n in modules if n][:12]
            raise fail(f"layer {name!r}", f"no module {path!r} in {type(model).__name__}",
                       f"a dotted module path such as {options}")
        resolved[name] = modules[path]
    return resolved


def _check_inputs(stimulus_ids, stimuli, layers, reduction, batch_size):
    if reduction not in REDUCTIONS:
        raise fail("reduction", f"unknown reduction {reduction!r}", f"one of {REDUCTIONS}")
    if not layers:
        raise fail("layers", "no layers requested", "at least one layer name → module path")
    if len(stimulus_ids) != len(stimuli) or len(stimuli) == 0:
        raise fail("stimuli", f"{len(stimulus_ids)} ids for {len(stimuli)} stimuli",
                   "one id per stimulus and at least one stimulus")
    if len(set(stimulus_ids)) != len(stimulus_ids):
        raise fail("stimuli", f"{len(stimulus_ids) - len(set(stimulus_ids))} duplicate ids",
                   "unique stimulus ids")
    if batch_size < 1:
        raise fail("batch_size", f"{batch_size}", "a positive integer")


def extract_activations(model, preprocess, stimulus_ids, stimuli, layers: dict[str, str],
                        reduction: str = "center", batch_size: int = 32, source: str = "model",
                        config: dict | str = "", stop_early: bool = False) -> dict:
    """Run ``stimuli`` through ``model`` and return one activations Dataset per layer.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its previous mode is restored); inputs go to its device.
    preprocess : callable
        A list of stimuli → input batch tensor.
    stimulus_ids : sequence of str
        Unique id of each stimulus, in the order of ``stimuli``.
    stimuli : sequence
        The stimuli (e.g. H×W×3 uint8 images), indexable and sliceable.
    layers : dict
        Friendly layer name → dotted module path in ``model``.
    reduction : {"center", "mean", "flatten"}
    batch_size : int
    source : str
        Model name, stored as the ``source`` attr.
    config : dict or str
        Config slice of the job, hashed into ``config_sha``.
    stop_early : bool
        Stop each forward pass once every requested layer has run (the rest of the
        network is not computed).

    Returns
    -------
    dict of str → xarray.Dataset
        ``kind="neurons"`` stores with units ``<layer>/<index:05d>``.
    """
    import torch

    _check_inputs(stimulus_ids, stimuli, layers, reduction, batch_size)
    modules = resolve_layers(model, layers)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    captured, shapes, chunks = {}, {}, {name: [] for name in layers}

    def hook_for(name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise fail(f"layer {name!r}", f"module {layers[name]!r} returns "
                                              f"{type(output).__name__}", "a tensor")
            if name in captured:
                raise fail(f"layer {name!r}", f"module {layers[name]!r} runs more than once "
                                              "per forward pass", "a module that runs once")
            shapes[name] = tuple(output.shape[1:])
            captured[name] = reduce_activation(output, reduction).float().cpu()
            if stop_early and len(captured) == len(layers):
                raise _LayersDone
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    n = len(stimuli)
    n_batches = math.ceil(n / batch_size)
    report_every = max(1, n_batches // 10)
    try:
        with torch.no_grad():
            for b, start in enumerate(range(0, n, batch_size), start=1):
                captured.clear()
                try:
                    model(preprocess(stimuli[start:start + batch_size]).to(device))
                except _LayersDone:
                    pass
                for name in layers:
                    if name not in captured:
                        raise fail(f"layer {name!r}", f"module {layers[name]!r} did not run "
                                                      "in the forward pass", "a module on the path")
                    chunks[name].append(captured[name].numpy())
                if b % report_every == 0 or b == n_batches:
                    print(f"extract {source}: {min(start + batch_size, n)}/{n} stimuli",
                          flush=True)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: _activation_store(name, np.concatenate(chunks[name]), stimulus_ids,
                                    layers[name], shapes[name], reduction, source, config)
            for name in layers}


def extract_model(model: str, stimulus_ids, stimuli, layer: str, module: str | None = None,
                  reduction: str = "center", batch_size: int = 32, config: dict | str = ""):
    """One layer of a model found by :func:`sparsealign.models.get_model` → one store.

    ``module`` is the layer's dotted module path; ``None`` looks ``layer`` up among the
    model's named layers. The forward pass stops once the layer has run.
    """
    from sparsealign.models import get_model

    spec = get_model(model)
    if module is None:
        if layer not in spec.layers:
            raise fail(f"model {model!r}", f"unknown layer {layer!r}",
                       f"one of {list(spec.layers)}, or layers: {{name: module.path}}")
        module = spec.layers[layer]
    return extract_activations(spec.build(), spec.preprocess, stimulus_ids, stimuli,
                               {layer: module}, reduction=reduction, batch_size=batch_size,
                               source=model, config=config, stop_early=True)[layer]


def _activation_store(name, values, stimulus_ids, module_path, shape, reduction, source, config):
    unit_ids = [f"{name}/{i:05d}" for i in range(values.shape[1])]
    attrs = {"module": module_path, "reduction": reduction,
             "output_shape": list(shape)}
    return schema.make_store(values, stimulus_ids, unit_ids, source=source, layer=name,
                             kind="neurons", config=config, attrs=attrs)


def save_activations(datasets: dict, out_dir) -> dict[str, Path]:
    """Write each layer's store to ``<out_dir>/<layer>.zarr`` (atomically); return the paths."""
    out_dir = Path(out_dir)
    return {name: schema.save_store(ds, out_dir / f"{name}.zarr") for name, ds in datasets.items()}
