"""Config, inference form, kernels, metrics and save/load of sparsealign.sae."""

import numpy as np
import pytest
import torch

from sparsealign.errors import SparsealignError
from sparsealign.sae import VARIANTS, SAEConfig, build_sae, encode_array, load_sae, save_sae
from sparsealign.sae.metrics import dead_fraction, explained_variance, fvu, l0


@pytest.mark.parametrize("kw, key", [
    (dict(k=65), "sae.k"), (dict(architecture="gated"), "sae.architecture"),
    (dict(n_latents=0), "sae.n_latents"), (dict(decoder_impl="fast"), "sae.decoder_impl"),
    (dict(device="tpu"), "sae.device"),
])
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(SparsealignError, match=f"^{key}:"):
        SAEConfig(**kw)


def test_config_round_trips_through_a_dict():
    cfg = SAEConfig(architecture="jumprelu", n_latents=128, l0_coef=0.01)
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SparsealignError, match="unknown keys"):
        SAEConfig.from_dict({"n_latent": 3})


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_shapes_and_seeded_init(arch):
    cfg = SAEConfig(architecture=arch, n_latents=48, k=5)
    sae = build_sae(cfg, 12)
    x = torch.randn(10, 12)
    z = sae.encode(x)
    assert z.shape == (10, 48) and sae.decode(z).shape == (10, 12)
    assert (z >= 0).all()
    same = build_sae(cfg, 12)
    assert all(torch.equal(a, b) for a, b in zip(sae.state_dict().values(),
                                                  same.state_dict().values()))


def test_topk_keeps_exactly_k():
    sae = build_sae(SAEConfig(n_latents=64, k=7), 16)
    with torch.no_grad():
        sae.b_enc += 5.0   # all pre-activations positive: top k is the only limit
    z = encode_array(sae, np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32),
                     batch_size=128)
    assert z.dtype == np.float32 and z.shape == (300, 64)
    assert ((z != 0).sum(axis=1) == 7).all()


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_and_dense_paths_agree(arch):
    x = torch.randn(128, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    results = {}
    for impl in ("sparse", "dense"):
        sae = build_sae(SAEConfig(architecture=arch, n_latents=64, k=4, aux_k=6,
                                  decoder_impl=impl), 16)
        assert sae.sparse == (impl == "sparse")
        out = sae.training_step(x, dead)
        out.loss.backward()
        results[impl] = [out.loss, out.terms["aux_loss"], out.x_hat] + [
            p.grad for p in sae.parameters()]
    for sparse, dense in zip(results["sparse"], results["dense"]):
        torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)


def test_scatter_kernels_agree():
    from sparsealign.sae.kernels import scatter_rows_index_add, scatter_rows_spmm

    g = torch.Generator().manual_seed(0)
    src, coef = torch.randn(50, 7, generator=g), torch.randn(300, generator=g)
    out_index = torch.randint(0, 20, (300,), generator=g)
    in_index = torch.randint(0, 50, (300,), generator=g)
    expected = torch.zeros(20, 7)
    for o, i, c in zip(out_index, in_index, coef):
        expected[o] += c * src[i]
    for kernel in (scatter_rows_spmm, scatter_rows_index_add):
        torch.testing.assert_close(kernel(out_index, in_index, coef, src, 20), expected)


def test_metrics_known_values():
    x = np.random.default_rng(0).normal(size=(200, 5))
    assert fvu(x, x) == 0 and fvu(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(1)
    assert explained_variance(x, x + 3.0) == pytest.approx(1)   # offsets are not penalised
    assert fvu(torch.from_numpy(x), torch.from_numpy(x)).item() == 0
    z = np.zeros((4, 6))
    z[0, 1] = z[1, 1] = z[2, 3] = 1.0
    assert l0(z) == pytest.approx(0.75)
    assert dead_fraction(z) == pytest.approx(4 / 6)


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_save_load_round_trip(arch, tmp_path):
    cfg = SAEConfig(architecture=arch, n_latents=32, k=3)
    sae = build_sae(cfg, 8)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_sae(sae, tmp_path / "sae.pt", {"layer": "fc1", "fvu": 0.1})
    assert not list(tmp_path.glob("*.tmp-*"))
    loaded = load_sae(path)
    assert loaded.cfg == cfg and loaded.meta == {"layer": "fc1", "fvu": 0.1}
    x = torch.randn(20, 8)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), sae(x), rtol=0, atol=0)


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(SparsealignError, match="junk.pt"):
        load_sae(tmp_path / "junk.pt")
    with pytest.raises(SparsealignError, match="no such file"):
        load_sae(tmp_path / "missing.pt")


def test_encode_array_rejects_bad_input():
    sae = build_sae(SAEConfig(n_latents=16, k=2), 4)
    with pytest.raises(SparsealignError, match="shape"):
        encode_array(sae, np.zeros((3, 5), dtype=np.float32))
    bad = np.zeros((3, 4), dtype=np.float32)
    bad[1, 1] = np.inf
    with pytest.raises(SparsealignError, match="NaN or infinite"):
        encode_array(sae, bad)
