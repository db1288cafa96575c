"""The trainer's fast paths give the answers of the plain forms they replace (no timings)."""

import numpy as np
import pytest
import torch

from sparsealign.sae import VARIANTS, SAEConfig, build_sae, train_sae
from sparsealign.sae.data import ArraySource, iter_batches
from sparsealign.sae.metrics import explained_variance, fvu, fvu_and_explained_variance
from sparsealign.sae.variants.base import SPARSE_MIN_LATENTS, _activity


def test_fused_metrics_match_the_separate_ones():
    x = torch.randn(256, 12) * torch.linspace(0.1, 3, 12) + 2
    x_hat = x + 0.3 * torch.randn_like(x) + 0.1
    both = fvu_and_explained_variance(x, x_hat)
    torch.testing.assert_close(both[0], fvu(x, x_hat))
    torch.testing.assert_close(both[1], explained_variance(x, x_hat))


def test_dense_activity_matches_the_boolean_form():
    z = torch.zeros(64, 40)
    z[torch.arange(64)[:, None], torch.randint(0, 30, (64, 5))] = torch.rand(64, 5) + 0.01
    z[3, 7] = 1e-30                                     # tiny but active
    fired, l0 = _activity(z, 40)
    assert torch.equal(fired, (z > 0).any(dim=0))
    assert fired[30:].sum() == 0
    torch.testing.assert_close(l0, (z > 0).sum() / z.shape[0])


@pytest.mark.parametrize("n_latents, k, sparse", [
    (64, 7, False), (256, 16, False), (SPARSE_MIN_LATENTS, 16, True),
    (4096, 32, True), (SPARSE_MIN_LATENTS, SPARSE_MIN_LATENTS // 4, False)])
def test_auto_decoder_impl_picks_sparse_only_where_it_pays(n_latents, k, sparse):
    for arch in ("topk", "batchtopk"):
        assert build_sae(SAEConfig(architecture=arch, n_latents=n_latents, k=k, device="cpu"),
                         8).sparse == sparse
        # On CUDA the dense products are always the faster (benchmarks/gpu_sae_profile.py);
        # building the module needs no GPU.
        assert not build_sae(SAEConfig(architecture=arch, n_latents=n_latents, k=k,
                                       device="cuda"), 8).sparse


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_dense_path_trains_like_the_sparse_path(arch):
    x = np.random.default_rng(0).standard_normal((2048, 16)).astype(np.float32)
    results = {}
    for impl in ("sparse", "dense"):
        cfg = SAEConfig(architecture=arch, n_latents=64, k=4, aux_k=6, dead_tokens=256,
                        batch_size=256, device="cpu", decoder_impl=impl, log_every=2)
        sae, history = train_sae(x, cfg)
        results[impl] = (sae.state_dict(), history)
    for key, value in results["sparse"][0].items():
        torch.testing.assert_close(results["dense"][0][key], value, atol=1e-4, rtol=1e-4)
    for key in ("fvu", "aux_loss", "l0", "dead_fraction"):
        np.testing.assert_allclose(results["dense"][1][key], results["sparse"][1][key],
                                   atol=1e-4)


def test_batches_are_the_gathered_rows_in_plan_order():
    x = np.arange(300 * 3, dtype=np.float32).reshape(300, 3)
    batches = list(iter_batches(ArraySource(x), 64, 10**6, seed=1, epoch=0))
    rows = np.concatenate(batches)
    assert sorted(rows[:, 0].tolist()) == x[:, 0].tolist()     # each row once
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44]
