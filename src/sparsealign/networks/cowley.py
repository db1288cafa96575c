"""Torch port of the Cowley et al. (2023) compact V4 models of :mod:`sparsealign.models.cowley`.

Each ``<family>_100filters.keras`` file of the data mirror is a zip of ``config.json``
(a functional layer graph), ``model.weights.h5`` and ``metadata.json``.
:func:`port_keras_chain` rebuilds such chains layer by layer with TensorFlow's padding
rules; no TensorFlow is needed. Module names are the Keras layer names (``layer0_conv``,
``layer0_bn``, …).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sparsealign.errors import fail
from sparsealign.models.cowley import FAMILIES, IMAGE_SIZE, MODEL_DIR, RGB_MEANS
from sparsealign.stimuli.mirror import default_mirror_dir, verify_files


class TFSamePad(nn.Module):
    """Zero padding as TensorFlow's ``padding='same'``: the odd pixel goes after."""

    def __init__(self, kernel_size, strides, dilation_rate):
        super().__init__()
        self.kernel_size, self.strides, self.dilation_rate = kernel_size, strides, dilation_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.strides,
                                 self.dilation_rate):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return F.pad(x, (left, right, top, bottom))


class KerasFlatten(nn.Module):
    """Flatten in Keras' channels-last order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x.flatten(1)


def keras_snake_case(class_name: str) -> str:
    """Keras 3's weight-file name of a layer class: ``SeparableConv2D`` → ``separable_conv2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _weight(variables, index, shape, path, layer) -> torch.Tensor:
    """Weight ``index`` of a Keras layer, checked against the ``shape`` its config implies."""
    key = str(index)
    if key not in variables:
        raise fail(path, f"layer {layer!r} lacks weight {index}",
                   f"a weight of shape {shape} as its config.json entry implies")
    value = np.asarray(variables[key], dtype=np.float32)
    if value.shape != tuple(shape):
        raise fail(path, f"layer {layer!r} weight {index} has shape {value.shape}",
                   f"{tuple(shape)} as its config.json entry implies")
    return torch.from_numpy(value)


def _activation(name, path, layer):
    if name in ("linear", None):
        return None
    if name == "relu":
        return nn.ReLU()
    raise fail(path, f"layer {layer!r} uses activation {name!r}", "'relu' or 'linear'")


def _conv(cfg, in_channels, variables, path):
    """Conv2D / DepthwiseConv2D / SeparableConv2D → (module, out_channels)."""
    kind, layer = cfg["class_name"], cfg["config"]["name"]
    c = cfg["config"]
    if c.get("data_format", "channels_last") != "channels_last" or c.get("groups", 1) != 1:
        raise fail(path, f"layer {layer!r} is not a plain channels_last conv",
                   "data_format='channels_last', groups=1")
    kernel_size, strides, dilation = tuple(c["kernel_size"]), tuple(c["strides"]), \
        tuple(c["dilation_rate"])
    stages = []
    if c["padding"] == "same":
        stages.append(TFSamePad(kernel_size, strides, dilation))
    elif c["padding"] != "valid":
        raise fail(path, f"layer {layer!r} has padding {c['padding']!r}", "'same' or 'valid'")
    kh, kw = kernel_size
    weight_index = itertools.count()  # Keras stores a layer's weights as vars/0, vars/1, …
    if kind == "Conv2D":
        out_channels = c["filters"]
        last = nn.Conv2d(in_channels, out_channels, kernel_size, strides, dilation=dilation,
                         bias=c["use_bias"])
        kernel = _weight(variables, next(weight_index), (kh, kw, in_channels, out_channels),
                         path, layer)
        with torch.no_grad():
            last.weight.copy_(kernel.permute(3, 2, 0, 1))
        stages.append(last)
    else:
        multiplier = c["depth_multiplier"]
        out_channels = in_channels * multiplier
        # Keras orders depthwise outputs channel-major (c * M + m), as torch's groups do.
        last = nn.Conv2d(in_channels, out_channels, kernel_size, strides, dilation=dilation,
                         groups=in_channels, bias=kind == "DepthwiseConv2D" and c["use_bias"])
        kernel = _weight(variables, next(weight_index), (kh, kw, in_channels, multiplier),
                         path, layer)
        with torch.no_grad():
            last.weight.copy_(kernel.permute(2, 3, 0, 1).reshape(last.weight.shape))
        stages.append(last)
        if kind == "SeparableConv2D":
            pointwise_in, out_channels = out_channels, c["filters"]
            last = nn.Conv2d(pointwise_in, out_channels, 1, bias=c["use_bias"])
            kernel = _weight(variables, next(weight_index),
                             (1, 1, pointwise_in, out_channels), path, layer)
            with torch.no_grad():
                last.weight.copy_(kernel.permute(3, 2, 0, 1))
            stages.append(last)
    if c["use_bias"]:
        with torch.no_grad():
            last.bias.copy_(_weight(variables, next(weight_index), (out_channels,), path, layer))
    activation = _activation(c.get("activation"), path, layer)
    stages += [activation] if activation is not None else []
    return (stages[0] if len(stages) == 1 else nn.Sequential(*stages)), out_channels


def _batch_norm(cfg, in_channels, variables, path):
    c, layer = cfg["config"], cfg["config"]["name"]
    if c["axis"] not in (-1, 3, [-1], [3]):
        raise fail(path, f"layer {layer!r} normalises axis {c['axis']}", "the channel axis (-1)")
    bn = nn.BatchNorm2d(in_channels, eps=c["epsilon"])
    names = (["weight"] if c["scale"] else []) + (["bias"] if c["center"] else []) \
        + ["running_mean", "running_var"]
    with torch.no_grad():
        for index, name in enumerate(names):
            getattr(bn, name).copy_(_weight(variables, index, (in_channels,), path, layer))
    return bn, in_channels


def _inbound_names(cfg) -> list[str]:
    return [arg["config"]["keras_history"][0]
            for node in cfg.get("inbound_nodes", [])
            for arg in node.get("args", []) if isinstance(arg, dict) and "config" in arg]


def port_keras_chain(config: dict, weights, path, in_channels: int = 3) -> nn.Sequential:
    """Rebuild a Keras 3 functional chain as an ``nn.Sequential`` with the Keras layer names.

    Parameters
    ----------
    config : dict
        Parsed ``config.json`` of a ``.keras`` file.
    weights : h5py.File
        Its ``model.weights.h5`` (``layers/<snake_case class>[_<k>]/vars/<i>``).
    path : path
        The ``.keras`` file, named in errors.
    in_channels : int
        Channels of the input image.
    """
    builders = {"Conv2D": _conv, "DepthwiseConv2D": _conv, "SeparableConv2D": _conv,
                "BatchNormalization": _batch_norm}
    modules, counts, previous, channels = OrderedDict(), {}, None, in_channels
    for cfg in config["config"]["layers"]:
        kind, layer = cfg["class_name"], cfg["config"]["name"]
        base = keras_snake_case(kind)
        group = f"{base}_{counts[base]}" if counts.get(base) else base
        counts[base] = counts.get(base, 0) + 1
        inbound = _inbound_names(cfg)
        if kind != "InputLayer" and inbound != [previous]:
            raise fail(path, f"layer {layer!r} takes inputs {inbound}",
                       f"a chain (each layer fed by the one before, here {previous!r})")
        previous = layer
        if kind == "InputLayer":
            continue
        if kind in builders:
            variables = weights.get(f"layers/{group}/vars")
            if variables is None:
                raise fail(path, f"no weights group layers/{group} for layer {layer!r}",
                           "Keras 3 weights saved with the model")
            modules[layer], channels = builders[kind](cfg, channels, variables, path)
        elif kind == "Activation":
            modules[layer] = _activation(cfg["config"]["activation"], path, layer) or nn.Identity()
        elif kind == "Flatten":
            modules[layer] = KerasFlatten()
        else:
            raise fail(path, f"layer {layer!r} is a {kind}",
                       f"one of {sorted(builders) + ['Activation', 'Flatten', 'InputLayer']}")
    return nn.Sequential(modules)


def load_keras_chain(keras_path) -> nn.Sequential:
    """Port a ``.keras`` file (config.json + model.weights.h5) to torch, in eval mode."""
    import io

    import h5py

    keras_path = Path(keras_path)
    try:
        with zipfile.ZipFile(keras_path) as archive:
            config = json.loads(archive.read("config.json"))
            weights_blob = archive.read("model.weights.h5")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise fail(keras_path, f"not a readable Keras 3 file ({exc})",
                   "a zip with config.json and model.weights.h5") from None
    with h5py.File(io.BytesIO(weights_blob), "r") as weights:
        return port_keras_chain(config, weights, keras_path).eval()


def build_family(name: str, mirror_dir=None) -> nn.Sequential:
    """The compact model ``name`` (a key of :data:`FAMILIES`), checksum-verified, eval mode."""
    mirror_dir = Path(mirror_dir) if mirror_dir is not None else default_mirror_dir()
    relative = f"{MODEL_DIR}/{FAMILIES[name]}"
    return load_keras_chain(verify_files(mirror_dir, [relative])[relative])


def preprocess(images) -> torch.Tensor:
    """RGB uint8 112×112 images → mean-subtracted float32 batch (N, 3, 112, 112)."""
    batch = np.stack([np.asarray(image) for image in images]).astype(np.float32)
    if batch.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise fail("cowley input", f"images of shape {batch.shape[1:]}",
                   f"({IMAGE_SIZE}, {IMAGE_SIZE}, 3) RGB images (the spatial pool is fixed)")
    batch -= np.asarray(RGB_MEANS, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
