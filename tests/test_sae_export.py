"""Latent stores: dense and top-k sparse forms read back as the same Dataset."""

import numpy as np
import pytest
import xarray as xr

from sparsealign import schema
from sparsealign.errors import SparsealignError
from sparsealign.sae import SAEConfig, build_sae, encode_array
from sparsealign.sae.export import encode_to_store, read_latents


def activation_store(tmp_path, n=3000, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    ds = schema.make_store(x, [f"img{i:05d}" for i in range(n)],
                           [f"fc1/{j:05d}" for j in range(d)], source="toy", layer="fc1",
                           kind="neurons", config={"toy": 1})
    return schema.save_store(ds, tmp_path / "acts.zarr"), x


def dir_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_sparse_and_dense_stores_read_back_identical(tmp_path, arch):
    path, x = activation_store(tmp_path)
    sae = build_sae(SAEConfig(architecture=arch, n_latents=64, k=5,
                              jumprelu_init_threshold=0.5), 16)
    dense = encode_to_store(sae, path, tmp_path / "dense.zarr", sparse=False,
                            config={"sae": 1}, batch_size=1000)
    sparse = encode_to_store(sae, schema.open_store(path), tmp_path / "sparse.zarr",
                             sparse=True, config={"sae": 1}, batch_size=1000)
    a, b = read_latents(dense), read_latents(sparse)
    xr.testing.assert_identical(a, b)
    assert a.attrs["kind"] == "sae_latents" and a.attrs["layer"] == "fc1"
    assert a["unit"].values[17] == "latent/00017"
    np.testing.assert_array_equal(a["responses"].values, encode_array(sae, x))
    assert not list(tmp_path.glob("*.tmp-*"))


def test_sparse_topk_store_is_ten_times_smaller_than_dense_float32(tmp_path):
    path, _ = activation_store(tmp_path, n=4000, d=32)
    sae = build_sae(SAEConfig(n_latents=1024, k=8), 32)     # k / latents < 1 %
    dense = encode_to_store(sae, path, tmp_path / "dense.zarr", sparse=False)
    sparse = encode_to_store(sae, path, tmp_path / "sparse.zarr", sparse=True)
    dense_float32 = 4000 * 1024 * 4
    assert dir_bytes(sparse) * 10 <= dense_float32
    # zstd squeezes the dense store's zeros too: sparse is still the smaller one on disk.
    assert dir_bytes(sparse) < dir_bytes(dense)


def test_read_latents_rejects_missing_store(tmp_path):
    with pytest.raises(SparsealignError, match="no such store"):
        read_latents(tmp_path / "none.zarr")
