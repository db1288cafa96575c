"""Hook-based extraction on a tiny model whose activations can be computed by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from sparsealign import schema
from sparsealign.errors import SparsealignError
from sparsealign.extract import (extract_activations, reduce_activation, save_activations,
                                 scoring_vectors)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


def preprocess(images):
    return torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2)


@pytest.fixture
def stimuli():
    images = list(np.random.default_rng(0).normal(size=(7, 5, 6, 3)))
    return [f"s{i}" for i in range(7)], images


LAYERS = {"relu": "features.1", "head": "head"}


def test_center_mean_and_flatten_reductions_match_a_direct_forward(stimuli):
    ids, images = stimuli
    model = Tiny()
    with torch.no_grad():
        maps = model.features(preprocess(images)).numpy()  # (7, 4, 5, 6)
        head = model.head(torch.from_numpy(maps.mean(axis=(2, 3)))).numpy()
    expected = {"center": maps[:, :, 2, 3], "mean": maps.mean(axis=(2, 3)),
                "flatten": maps.reshape(7, -1)}
    for reduction, values in expected.items():
        stores = extract_activations(model, preprocess, ids, images, LAYERS, reduction=reduction,
                                     batch_size=3, source="tiny", config={"r": reduction})
        np.testing.assert_allclose(stores["relu"]["responses"].values, values, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(stores["head"]["responses"].values, head, rtol=1e-5, atol=1e-6)
    relu = stores["relu"]
    assert relu["unit"].values[:2].tolist() == ["relu/00000", "relu/00001"]
    assert relu["stimulus"].values.tolist() == ids
    assert relu.attrs["kind"] == "neurons" and relu.attrs["source"] == "tiny"
    assert relu.attrs["output_shape"] == [4, 5, 6]


def test_results_do_not_depend_on_batch_size_and_mode_is_restored(stimuli):
    ids, images = stimuli
    model = Tiny().train()
    one = extract_activations(model, preprocess, ids, images, LAYERS, batch_size=1)
    many = extract_activations(model, preprocess, ids, images, LAYERS, batch_size=64)
    np.testing.assert_allclose(one["head"]["responses"].values,
                               many["head"]["responses"].values, rtol=1e-6)  # dropout was off
    assert model.training


def test_stores_round_trip_through_zarr(stimuli, tmp_path, capsys):
    ids, images = stimuli
    stores = extract_activations(Tiny(), preprocess, ids, images, LAYERS, source="tiny")
    paths = save_activations(stores, tmp_path)
    assert paths["relu"] == tmp_path / "relu.zarr"
    reopened = schema.open_store(paths["relu"])
    np.testing.assert_array_equal(reopened["responses"].values, stores["relu"]["responses"].values)
    assert "extract tiny: 7/7 stimuli" in capsys.readouterr().out


@pytest.mark.parametrize("layers, kwargs, problem", [
    ({"x": "features.9"}, {}, "no module 'features.9' in Tiny"),
    ({"x": "unused"}, {}, "did not run in the forward pass"),
    ({}, {}, "no layers requested"),
    (LAYERS, {"reduction": "max"}, "unknown reduction 'max'"),
    (LAYERS, {"batch_size": 0}, "batch_size"),
])
def test_bad_requests_are_named_errors(stimuli, layers, kwargs, problem):
    ids, images = stimuli
    with pytest.raises(SparsealignError, match=problem):
        extract_activations(Tiny(), preprocess, ids, images, layers, **kwargs)


def test_stimulus_ids_must_be_unique_and_one_per_stimulus(stimuli):
    ids, images = stimuli
    with pytest.raises(SparsealignError, match="duplicate ids"):
        extract_activations(Tiny(), preprocess, ["a"] * 7, images, LAYERS)
    with pytest.raises(SparsealignError, match="6 ids for 7 stimuli"):
        extract_activations(Tiny(), preprocess, ids[:6], images, LAYERS)


def test_a_module_that_runs_twice_is_ambiguous(stimuli):
    ids, images = stimuli
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 2, 1), relu, nn.Conv2d(2, 2, 1), relu)
    with pytest.raises(SparsealignError, match="runs more than once"):
        extract_activations(model, preprocess, ids, images, {"relu": "1"})


def test_reduce_activation_keeps_vectors_and_centres_odd_and_even_maps():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(reduce_activation(x, "center"), x[:, :, 2, 2])
    assert torch.equal(reduce_activation(x[:, :, 0, 0], "mean"), x[:, :, 0, 0])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_scoring_vectors_keep_no_feature_map_alive(layout):
    # A centre vector is a view of the batch's whole output: stored as it is, every batch's
    # maps would stay in memory until the store is written (24 GB for VGG16 on 3,000 images).
    output = torch.randn(8, 16, 32, 32).contiguous(memory_format=layout)
    vectors = scoring_vectors(output, "center")
    assert torch.equal(vectors, output[:, :, 16, 16])
    assert vectors.untyped_storage().nbytes() == 8 * 16 * 4
