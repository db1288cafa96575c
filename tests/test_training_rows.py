"""SAE training rows of conv layers: the rows store, row subsets, held-out evaluation, LN."""

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from torch import nn

from sparsealign import schema
from sparsealign.errors import SparsealignError
from sparsealign.extract import extract_model, extract_network, sample_positions
from sparsealign.models import ModelSpec
from sparsealign.sae import SAEConfig, encode_array, evaluate_sae, load_sae, save_sae, train_sae
from sparsealign.sae.data import StoreSource, iter_batches, select_rows
from conftest import Killed, kill_at

MODEL = "test_training_rows:tiny_conv"
LAYERS = {"conv1": None, "conv2": "net.3"}


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(6, 5, 3, stride=2), nn.ReLU())
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.net(x).mean(dim=(2, 3)))


def preprocess(images):
    return torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2)


def tiny_conv():
    return ModelSpec(name="tiny_conv", build=lambda: TinyConv().eval(), preprocess=preprocess,
                     layers={"conv1": "net.1", "conv2": "net.3"})


@pytest.fixture(scope="module")
def stimuli():
    images = list(np.random.default_rng(0).normal(size=(11, 7, 9, 3)).astype(np.float32))
    return [f"img{i:02d}" for i in range(11)], images


def full_maps(images, flip=False):
    """(n, C, P) outputs of both layers computed directly."""
    x = preprocess(images)
    x = x.flip(-1) if flip else x
    with torch.no_grad():
        conv1 = TinyConv().net[:2](x)
        conv2 = TinyConv().net(x)
    return {"conv1": conv1.flatten(2).numpy(), "conv2": conv2.flatten(2).numpy()}


ROWS = {"positions": 5, "flips": True, "seed": 3, "chunk_rows": 16}


@pytest.fixture(scope="module")
def extracted(stimuli, tmp_path_factory):
    ids, images = stimuli
    out = tmp_path_factory.mktemp("rows")
    return extract_network(MODEL, ids, images, LAYERS, out, batch_size=4, config={"c": 1},
                           rows=ROWS), out


def test_rows_store_holds_sampled_positions_of_plain_and_flipped_images(stimuli, extracted):
    ids, images = stimuli
    paths, _ = extracted
    maps = {False: full_maps(images), True: full_maps(images, flip=True)}
    for layer, n_units, n_positions in (("conv1", 6, 63), ("conv2", 5, 12)):
        ds = xr.open_zarr(paths[layer]["rows"], consolidated=False)
        assert ds["responses"].dims == ("row", "unit")
        assert ds["responses"].shape == (11 * 5 * 2, n_units)
        assert ds["responses"].dtype == np.float16
        assert ds["image"].values.tolist() == ids
        assert ds["unit"].values.tolist()[:2] == [f"{layer}/00000", f"{layer}/00001"]
        assert ds.attrs["positions"] == 5 and ds.attrs["flips"] is True
        assert ds.attrs["seed"] == 3 and ds.attrs["source"] == MODEL
        assert ds.attrs["layer"] == layer and ds.attrs["config_sha"]
        assert ds.attrs["output_shape"] == list(schema.open_store(
            paths[layer]["scoring"]).attrs["output_shape"])
        assert zarr.open_group(paths[layer]["rows"], mode="r")["responses"].chunks == (16, n_units)
        image, position = ds["image_index"].values, ds["position"].values
        flipped = ds["flipped"].values
        np.testing.assert_array_equal(image, np.repeat(np.arange(11), 10))
        np.testing.assert_array_equal(flipped, np.tile(np.repeat([False, True], 5), 11))
        for i in (0, 6, 10):
            for flip in (False, True):
                rows = (image == i) & (flipped == flip)
                expected = sample_positions(n_positions, 5, 3, i, flip)
                np.testing.assert_array_equal(position[rows], expected)
                np.testing.assert_allclose(ds["responses"].values[rows].astype(np.float32),
                                           maps[flip][layer][i][:, expected].T,
                                           rtol=2e-3, atol=2e-3)
        assert len(set(position[image == 0]) - set(position[image == 1])) > 0


def test_scoring_store_is_what_extract_model_writes(stimuli, extracted):
    ids, images = stimuli
    paths, _ = extracted
    for layer, module in (("conv1", None), ("conv2", "net.3")):
        direct = extract_model(MODEL, ids, images, layer, module, batch_size=4, config={"c": 1})
        stored = schema.open_store(paths[layer]["scoring"])
        np.testing.assert_array_equal(stored["responses"].values, direct["responses"].values)
        assert stored["unit"].values.tolist() == direct["unit"].values.tolist()
        assert {k: v for k, v in stored.attrs.items()} == \
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in direct.attrs.items()}


def test_rows_do_not_depend_on_batch_size_and_every_position_is_default(stimuli, extracted,
                                                                        tmp_path):
    ids, images = stimuli
    paths, _ = extracted
    other = extract_network(MODEL, ids, images, LAYERS, tmp_path / "b", batch_size=3, rows=ROWS)
    for name in ("responses", "image_index", "position", "flipped"):
        a = zarr.open_group(paths["conv2"]["rows"], mode="r")[name][:]
        b = zarr.open_group(other["conv2"]["rows"], mode="r")[name][:]
        np.testing.assert_array_equal(a, b)
    every = extract_network(MODEL, ids, images, {"conv2": None}, tmp_path / "all",
                            rows={"dtype": "float32"})
    ds = xr.open_zarr(every["conv2"]["rows"], consolidated=False)
    assert ds["responses"].shape == (11 * 12, 5) and ds["responses"].dtype == np.float32
    np.testing.assert_array_equal(ds["position"].values, np.tile(np.arange(12), 11))
    np.testing.assert_allclose(ds["responses"].values.reshape(11, 12, 5),
                               full_maps(images)["conv2"].transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    assert not ds["flipped"].values.any()
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["conv2.rows.zarr", "conv2.zarr"]


def test_a_failed_extraction_leaves_no_store(stimuli, tmp_path):
    ids, images = stimuli
    with pytest.raises(SparsealignError, match="rows.dtype"):
        extract_network(MODEL, ids, images, LAYERS, tmp_path, rows={"dtype": "int8"})
    with pytest.raises(SparsealignError, match="unknown keys"):
        extract_network(MODEL, ids, images, LAYERS, tmp_path, rows={"position": 3})
    broken = images[:6] + [np.zeros((5, 5, 3), dtype=np.float32)] + images[7:]
    with pytest.raises(ValueError):     # the second batch cannot be stacked
        extract_network(MODEL, ids, broken, LAYERS, tmp_path / "x", batch_size=4,
                        rows={"chunk_rows": 8})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


# ---- SAE side: row subsets, resumable training, held-out evaluation, LN -------------------

def layer_norm(x):
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)


@pytest.fixture(scope="module")
def every_row(stimuli, tmp_path_factory):
    """conv1 at every position, plain and flipped: 11 × 63 × 2 = 1386 rows of 6 units."""
    ids, images = stimuli
    out = tmp_path_factory.mktemp("every")
    return extract_network(MODEL, ids, images, {"conv1": None}, out, batch_size=5,
                           rows={"flips": True, "chunk_rows": 64})["conv1"]["rows"]


def by_rows(a):
    return a[np.lexsort(a.T[::-1])]


def test_select_rows_excludes_subsamples_nests_and_complements(every_row, extracted):
    image = zarr.open_group(every_row, mode="r")["image_index"][:]
    held_out = ["img00", "img03"]
    train = select_rows(every_row, exclude_images=held_out)
    test = select_rows(every_row, only_images=held_out)
    assert not np.isin(image[train], [0, 3]).any() and np.isin(image[test], [0, 3]).all()
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1386))
    half = select_rows(every_row, exclude_images=held_out, fraction=0.5, seed=1)
    quarter = select_rows(every_row, exclude_images=held_out, fraction=0.25, seed=1)
    assert half.size == round(0.5 * train.size) and np.isin(quarter, half).all()
    assert np.all(np.diff(half) > 0) and np.isin(half, train).all()
    assert not np.array_equal(half, select_rows(every_row, exclude_images=held_out,
                                                fraction=0.5, seed=2))
    scoring = extracted[0]["conv1"]["scoring"]            # a (stimulus, unit) store works too
    np.testing.assert_array_equal(select_rows(scoring, exclude_images=["img01"]),
                                  [0] + list(range(2, 11)))
    with pytest.raises(SparsealignError, match="not in the store"):
        select_rows(every_row, only_images=["nope"])
    with pytest.raises(SparsealignError, match="fraction"):
        select_rows(every_row, fraction=0)


def test_store_source_reads_a_row_subset_of_a_rows_store(every_row):
    responses = zarr.open_group(every_row, mode="r")["responses"][:]
    rows = select_rows(every_row, exclude_images=["img02"], fraction=0.6, seed=0)
    source = StoreSource(every_row, rows=rows)
    assert (source.n_rows, source.d) == (rows.size, 6)
    assert source.block_rows <= 64 and sum(b - a for a, b in source.blocks) == rows.size
    for start, stop in source.blocks:          # each block lies in one Zarr chunk
        assert len(np.unique(rows[start:stop] // 64)) == 1
    batches = list(iter_batches(source, 50, 200, seed=4, epoch=1))
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(by_rows(np.concatenate(batches)),
                                  by_rows(responses[rows].astype(np.float32)))
    resumed = list(iter_batches(source, 50, 200, seed=4, epoch=1, start_batch=5))
    for a, b in zip(batches[5:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SparsealignError, match="sorted"):
        StoreSource(every_row, rows=rows[::-1])


def test_training_on_a_row_subset_resumes_exactly(every_row, tmp_path):
    rows = select_rows(every_row, exclude_images=["img00"], fraction=0.8, seed=0)
    config = SAEConfig(n_latents=12, k=3, batch_size=64, epochs=2, log_every=4,
                       shuffle_window_rows=256, dead_tokens=200, input_norm="layernorm",
                       normalize_input=True)
    assert rows.size > 3 * config.shuffle_window_rows
    reference, ref_history = train_sae(StoreSource(every_row, rows=rows), config)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        train_sae(StoreSource(every_row, rows=rows), config, checkpoint=ckpt,
                  checkpoint_every=7, log_fn=kill_at(20))
    other = select_rows(every_row, exclude_images=["img00"], fraction=0.8, seed=1)
    with pytest.raises(SparsealignError, match="another subset"):
        train_sae(StoreSource(every_row, rows=other), config, checkpoint=ckpt)
    resumed, history = train_sae(StoreSource(every_row, rows=rows), config, checkpoint=ckpt)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert history["fvu"] == ref_history["fvu"]


def test_evaluate_sae_matches_a_direct_computation(every_row):
    responses = zarr.open_group(every_row, mode="r")["responses"][:].astype(np.float32)
    held_out = select_rows(every_row, only_images=["img04", "img09"])
    train = select_rows(every_row, exclude_images=["img04", "img09"])
    for input_norm in ("none", "layernorm"):
        cfg = SAEConfig(n_latents=24, k=3, batch_size=128, epochs=2, input_norm=input_norm,
                        dead_tokens=300)
        sae, _ = train_sae(StoreSource(every_row, rows=train), cfg)
        x = responses[held_out]
        target = layer_norm(x) if input_norm == "layernorm" else x.astype(np.float64)
        z = encode_array(sae, x)
        x_hat = sae.decode(torch.from_numpy(z)).detach().double().numpy()
        expected = {"fvu": ((x_hat - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum(),
                    "l0": (z != 0).sum(1).mean(), "dead_fraction": ((z != 0).sum(0) == 0).mean(),
                    "n_rows": held_out.size}
        for result in (evaluate_sae(sae, every_row, rows=held_out, batch_size=7),
                       evaluate_sae(sae, x)):
            assert result.keys() == expected.keys()
            for key, value in expected.items():
                assert result[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (input_norm, key)
        assert 0 < expected["fvu"] < 1


def test_layernorm_switch_is_applied_by_a_loaded_sae(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(600, 10)) * rng.uniform(0.5, 4, size=(600, 1)) + 2).astype(np.float32)
    cfg = SAEConfig(n_latents=16, k=2, batch_size=100, epochs=2, input_norm="layernorm")
    sae, history = train_sae(x, cfg)
    loaded = load_sae(save_sae(sae, tmp_path / "sae.pt"))
    assert loaded.cfg.input_norm == "layernorm"
    xn = torch.from_numpy(layer_norm(x).astype(np.float32))
    pre = xn @ loaded.W_enc.detach().T + loaded.b_enc.detach()
    values, indices = pre.topk(2, dim=1)
    direct = torch.zeros_like(pre).scatter_(1, indices, values.relu()).numpy()
    np.testing.assert_allclose(encode_array(loaded, x), direct, rtol=1e-4, atol=1e-5)
    # per-row affine changes of the input do not change the code
    np.testing.assert_allclose(encode_array(loaded, 3 * x - 1), encode_array(loaded, x),
                               rtol=1e-3, atol=1e-4)
    fvu = evaluate_sae(loaded, x)["fvu"]
    x_hat = loaded(torch.from_numpy(x)).detach().double().numpy()
    target = layer_norm(x)
    assert fvu == pytest.approx(((x_hat - target) ** 2).sum()
                                / ((target - target.mean(0)) ** 2).sum(), rel=1e-4)
    assert history["fvu"][-1] == pytest.approx(fvu, abs=0.15)    # training measured the same way


def test_layernorm_composes_with_normalize_input():
    from sparsealign.sae import build_sae

    x = torch.from_numpy(np.random.default_rng(2).normal(size=(50, 8)).astype(np.float32) * 5)
    sae = build_sae(SAEConfig(n_latents=16, k=3, input_norm="layernorm"), 8)
    folded = build_sae(SAEConfig(n_latents=16, k=3, input_norm="layernorm"), 8)
    mean, scale = torch.linspace(-0.5, 0.5, 8), torch.tensor(1.7)
    folded.fold_input_norm(mean, scale)
    with torch.no_grad():
        pre = sae.pre_acts((sae.prepare_input(x) - mean) / scale)
        values, indices = pre.topk(3, dim=1)
        expected = torch.zeros_like(pre).scatter_(1, indices, values.relu())
        torch.testing.assert_close(folded.encode(x), expected, rtol=1e-4, atol=1e-5)
        decoded = sae.decode(expected) * scale + mean
        torch.testing.assert_close(folded.decode(expected), decoded, rtol=1e-4, atol=1e-5)


def test_an_sae_file_without_input_norm_loads_without_it(tmp_path):
    from sparsealign.sae import build_sae

    path = save_sae(build_sae(SAEConfig(n_latents=8, k=2), 4), tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["config"]["input_norm"]
    torch.save(payload, path)
    assert load_sae(path).cfg.input_norm == "none"
    with pytest.raises(SparsealignError, match="input_norm"):
        SAEConfig(input_norm="batchnorm")
