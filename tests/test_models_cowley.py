"""The torch ports of the Cowley et al. (2023) compact V4 models.

Checked against (1) what Keras 3.15.1 computes from the published ``.keras`` files
(``tests/data/keras_reference.npz``, see ``make_keras_reference.py``), (2) a NumPy
re-implementation of the first block, and (3) real V4 responses of test session 190923.
"""

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sparsealign.errors import SparsealignError
from sparsealign.models import get_model
from sparsealign.models.cowley import FAMILIES, MODEL_DIR, OUTPUT_SESSIONS, RGB_MEANS
from sparsealign.networks.cowley import TFSamePad, keras_snake_case, load_keras_chain
from sparsealign.stimuli.images import cowley_v4_image_zip, read_indexed_jpegs
from sparsealign.stimuli.mirror import default_mirror_dir

MIRROR = default_mirror_dir()
REFERENCE = np.load(Path(__file__).parent / "data" / "keras_reference.npz")
pytestmark = pytest.mark.skipif(not (MIRROR / "SHA256SUMS").is_file(),
                                reason=f"no data mirror at {MIRROR} (SPARSEALIGN_DATA_MIRROR)")


@pytest.fixture(scope="module")
def session_190923():
    ids, images = read_indexed_jpegs(MIRROR / cowley_v4_image_zip("190923"))
    responses = np.load(MIRROR / "cowley2023_v4/responses_repeat_averaged/responses_190923.npy")
    return ids, images, responses


def run_with_hooks(spec, model, images):
    modules = dict(model.named_modules())
    outputs = {}
    handles = [modules[path].register_forward_hook(
        lambda module, inputs, output, name=name: outputs.__setitem__(name, output))
        for name, path in spec.layers.items()]
    with torch.no_grad():
        prediction = model(spec.preprocess(images))
    for handle in handles:
        handle.remove()
    return prediction, outputs


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_layer_matches_keras_on_real_images(name, session_190923):
    ids, images, _ = session_190923
    assert ids[:4].tolist() == REFERENCE["cowley_stimulus_ids"].tolist()
    spec = get_model(name)
    prediction, outputs = run_with_hooks(spec, spec.build(), images[:4])
    assert prediction.shape == (4, sum(OUTPUT_SESSIONS.values()))
    for layer, output in outputs.items():
        ours = output if output.ndim == 2 else output[:, :, output.shape[2] // 2,
                                                      output.shape[3] // 2]
        expected = REFERENCE[f"{name}/{layer}"]
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max(), err_msg=layer)


def test_first_block_matches_numpy_at_a_few_pixels(session_190923):
    """Conv 5×5 'same' + batch norm + ReLU, computed directly from the HDF5 weights."""
    _, images, _ = session_190923
    with zipfile.ZipFile(MIRROR / MODEL_DIR / FAMILIES["cowley_direct_fit"]) as archive:
        config = json.loads(archive.read("config.json"))
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    eps = config["config"]["layers"][2]["config"]["epsilon"]
    kernel, bias = weights["layers/conv2d/vars/0"][:], weights["layers/conv2d/vars/1"][:]
    gamma, beta, mean, var = (weights[f"layers/batch_normalization/vars/{i}"][:] for i in range(4))
    x = np.pad(images[0].astype(np.float64) - RGB_MEANS, ((2, 2), (2, 2), (0, 0)))
    spec = get_model("cowley_direct_fit")
    _, outputs = run_with_hooks(spec, spec.build(), images[:1])
    for row, col in [(0, 0), (56, 56), (111, 3), (40, 111)]:
        z = np.einsum("ijc,ijcf->f", x[row:row + 5, col:col + 5], kernel) + bias
        expected = np.maximum(gamma * (z - mean) / np.sqrt(var + eps) + beta, 0)
        np.testing.assert_allclose(outputs["layer0"][0, :, row, col].numpy(), expected,
                                   rtol=1e-4, atol=1e-5)


def test_predictions_correlate_with_held_out_v4_responses(session_190923):
    """Outputs 0–32 predict the 33 neurons of session 190923 (a held-out test session).

    On all 1,200 images the median per-neuron r is 0.66; on these 32 it is 0.84.
    """
    _, images, responses = session_190923
    spec = get_model("cowley_direct_fit")
    with torch.no_grad():
        prediction = spec.build()(spec.preprocess(images[:32])).numpy()[:, :33]
    actual = responses[:, :32].T
    r = [np.corrcoef(prediction[:, n], actual[:, n])[0, 1] for n in range(33)]
    assert np.median(r) > 0.5


def test_tf_same_padding_puts_the_odd_pixel_after():
    x = torch.ones(1, 1, 112, 112)
    padded = TFSamePad((5, 5), (2, 2), (1, 1))(x)
    assert padded.shape[-2:] == (115, 115)
    assert padded[0, 0, 0, 1] == 0 and padded[0, 0, 1, 1] == 1 and padded[0, 0, -3, -3] == 1
    assert padded[0, 0, -2, -2] == 0


def test_keras_class_names_become_weight_group_names():
    assert [keras_snake_case(c) for c in ("Conv2D", "SeparableConv2D", "BatchNormalization")] \
        == ["conv2d", "separable_conv2d", "batch_normalization"]


def test_preprocess_rejects_other_image_sizes():
    with pytest.raises(SparsealignError, match=r"\(112, 112, 3\)"):
        get_model("cowley_direct_fit").preprocess([np.zeros((64, 64, 3), dtype=np.uint8)])


def keras_file(tmp_path, layers, weights):
    """A minimal .keras zip: a functional config of ``layers`` and HDF5 ``weights``."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for name, value in weights.items():
            h5[name] = value
    config = {"class_name": "Functional", "config": {"layers": layers}}
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def layer(kind, name, previous, **config):
    inbound = [] if previous is None else [
        {"args": [{"class_name": "__keras_tensor__",
                   "config": {"keras_history": [previous, 0, 0]}}]}]
    return {"class_name": kind, "config": {"name": name, **config}, "inbound_nodes": inbound}


CONV = dict(filters=2, kernel_size=[1, 1], strides=[1, 1], padding="valid",
            dilation_rate=[1, 1], activation="linear", use_bias=True)


def test_a_small_keras_chain_is_ported(tmp_path):
    layers = [layer("InputLayer", "in", None), layer("Conv2D", "c", "in", **CONV),
              layer("Activation", "a", "c", activation="relu"), layer("Flatten", "f", "a")]
    kernel = np.array([[[[1.0, -1.0], [0.0, 2.0], [0.0, 0.0]]]])  # (1, 1, 3, 2)
    path = keras_file(tmp_path, layers, {"layers/conv2d/vars/0": kernel,
                                         "layers/conv2d/vars/1": np.array([0.5, 0.0])})
    model = load_keras_chain(path)
    x = torch.tensor([[1.0, 2.0, 3.0]]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(model(x).detach().numpy(), [[1.5, 3.0]])


@pytest.mark.parametrize("layers, weights, problem", [
    ([layer("InputLayer", "in", None), layer("Dense", "d", "in")], {}, "is a Dense"),
    ([layer("InputLayer", "in", None), layer("Conv2D", "c", "in", **CONV)], {},
     "no weights group layers/conv2d"),
    ([layer("InputLayer", "in", None), layer("Conv2D", "c", "in", **CONV)],
     {"layers/conv2d/vars/0": np.ones((1, 1, 2, 2)), "layers/conv2d/vars/1": np.ones(2)},
     "weight 0 has shape (1, 1, 2, 2)"),
    ([layer("InputLayer", "in", None), layer("Activation", "a", "in", activation="relu"),
      layer("Activation", "b", "in", activation="relu")], {}, "takes inputs ['in']"),
    ([layer("InputLayer", "in", None), layer("Activation", "a", "in", activation="gelu")], {},
     "activation 'gelu'"),
])
def test_unsupported_keras_graphs_are_named_errors(tmp_path, layers, weights, problem):
    with pytest.raises(SparsealignError, match=r"m\.keras: .*" + re.escape(problem)):
        load_keras_chain(keras_file(tmp_path, layers, weights))
