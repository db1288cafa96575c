"""Unit-level metrics: the streamed correlation engine, semi-, soft- and one-to-one matching."""

import numpy as np
import pytest
from scipy.stats import norm

from sparsealign.align import fold_labels, score
from sparsealign.align.correlation import correlate, split_correlations
from sparsealign.align.matching import semi_matching, transport_plan
from sparsealign.errors import SparsealignError


def _expected_max_normal(count: int) -> float:
    """E[max of `count` iid N(0, 1)] by numerical integration."""
    z = np.linspace(-10, 10, 20001)
    return float(np.trapezoid(z * count * norm.pdf(z) * norm.cdf(z) ** (count - 1), z))


def test_semi_matching_noise_in_sample_inflated_cv_zero():
    rng = np.random.default_rng(0)
    n, p = 1000, 256
    x, y = rng.standard_normal((n, p)), rng.standard_normal((n, p))
    in_sample = score("semi_matching", x, y, n_folds=1)["mean"]
    assert in_sample == pytest.approx(_expected_max_normal(p) / np.sqrt(n), rel=0.05)
    assert in_sample == pytest.approx(np.sqrt(2 * np.log(p) / n), rel=0.2)
    cv = score("semi_matching", x, y)
    assert abs(cv["mean"]) < 0.01 and abs(cv["reverse_mean"]) < 0.01


def test_correlations_match_numpy_on_every_split():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((120, 7)) * 4 + 9, rng.standard_normal((120, 5))
    folds = fold_labels(120, 4, seed=3)
    r_fit, r_eval = split_correlations(x, y, folds).full()
    for k in range(4):
        for rows, got in ((folds != k, r_fit[k]), (folds == k, r_eval[k])):
            want = np.corrcoef(x[rows].T, y[rows].T)[:7, 7:]
            np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(correlate(x, y), np.corrcoef(x.T, y.T)[:7, 7:], atol=1e-12)


def test_streaming_blocks_give_the_same_answer():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 300))
    y = x[:, :200] @ rng.standard_normal((200, 250)) * 0.1 + rng.standard_normal((400, 250))
    folds = fold_labels(400, 5, seed=0)
    whole = semi_matching(x, y, folds)
    small = split_correlations(x, y, folds, memory_budget_mb=0.5)
    assert small.block_columns < 20
    streamed = semi_matching(x, y, folds, memory_budget_mb=0.5)
    assert streamed.pop("block_columns") < whole.pop("block_columns")
    np.testing.assert_allclose(streamed.pop("_per_target"), whole.pop("_per_target"),
                               atol=1e-12)
    assert streamed["mutual_pairs"] == whole["mutual_pairs"]
    for key in ("folds", "reverse_folds", "mutual_folds"):
        assert streamed[key] == pytest.approx(whole[key], abs=1e-12)


def test_float32_and_torch_paths_agree_with_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 40)) + 100.0  # a large mean stresses float32 sums
    y = x[:, ::2] * 2 + rng.standard_normal((500, 20))
    base = score("semi_matching", x, y)
    assert base["precision"] == "float64"
    for options in ({"precision": "float32"}, {"device": "torch:cpu"}):
        other = score("semi_matching", x, y, **options)
        assert other["folds"] == pytest.approx(base["folds"], abs=1e-5)
        assert other["reverse_folds"] == pytest.approx(base["reverse_folds"], abs=1e-5)
        assert other["mutual_pairs"] == base["mutual_pairs"]
    for metric in ("hungarian", "soft_matching"):
        assert score(metric, x, y, device="torch:cpu")["folds"] == pytest.approx(
            score(metric, x, y)["folds"], abs=1e-5)


def test_mutual_pairs_and_directions():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 10))
    result = score("semi_matching", x, x[:, [3, 0, 2, 1]])       # 4 true pairs
    assert result["mutual_pairs"] == [4] * 5
    assert result["mutual_mean"] == pytest.approx(1.0)
    assert result["mean"] == pytest.approx(1.0)
    assert result["reverse_mean"] == pytest.approx(4 / 10, abs=0.03)  # 6 sources unexplained


def _random_similarity(rng, p, q):
    return np.corrcoef(rng.standard_normal((50, p + q)).T)[:p, p:]


@pytest.mark.parametrize("p,q", [(30, 30), (40, 10), (8, 24)])
def test_soft_matching_identities_match_network_simplex(p, q):
    import ot

    rng = np.random.default_rng(p * q)
    fit, test = _random_similarity(rng, p, q), _random_similarity(rng, p, q)
    plan, info = transport_plan(fit)
    assert info["solver"] == ("hungarian" if p == q else "hungarian_repeated")
    reference = ot.emd(np.full(p, 1 / p), np.full(q, 1 / q), 1 - fit, numItermax=10**7)
    assert (plan * fit).sum() == pytest.approx((reference * fit).sum(), abs=1e-9)
    assert (plan * test).sum() == pytest.approx((reference * test).sum(), abs=1e-9)
    np.testing.assert_allclose(plan.sum(axis=1), 1 / p, atol=1e-12)
    np.testing.assert_allclose(plan.sum(axis=0), 1 / q, atol=1e-12)


def test_soft_equals_hungarian_for_equal_sizes():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 12))
    y = x @ rng.standard_normal((12, 12)) + rng.standard_normal((300, 12))
    soft, hung = score("soft_matching", x, y), score("hungarian", x, y)
    assert soft["folds"] == pytest.approx(hung["folds"], abs=1e-9)
    assert soft["solver"] == ["hungarian"]


def test_exact_ot_guard_and_sinkhorn():
    rng = np.random.default_rng(6)
    sim = _random_similarity(rng, 37, 23)        # neither size divides the other
    exact, info = transport_plan(sim)
    assert info["solver"] == "network_simplex"
    with pytest.raises(SparsealignError, match="did not converge"):
        transport_plan(sim, max_iter=5)
    entropic, info = transport_plan(sim, mode="sinkhorn", epsilon=1e-3)
    assert info["epsilon"] == 1e-3
    assert (entropic * sim).sum() == pytest.approx((exact * sim).sum(), abs=2e-3)
    with pytest.raises(SparsealignError, match="Sinkhorn did not converge"):
        transport_plan(sim, mode="sinkhorn", epsilon=1e-4, max_iter=3)
    x = rng.standard_normal((200, 9))
    result = score("soft_matching", x, x[:, ::-1] + 0.1 * rng.standard_normal((200, 9)),
                   soft_mode="sinkhorn")
    assert result["epsilon"] == 0.01 and result["mean"] > 0.9


def test_hungarian_normalisations_are_stated():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 4))
    y = np.hstack([x, rng.standard_normal((200, 4))])
    pairs = score("hungarian", x, y)
    assert pairs["normalisation"] == "pairs" and pairs["mean"] == pytest.approx(1.0)
    assert score("hungarian", x, y, normalisation="target")["mean"] == pytest.approx(0.5)
    assert score("hungarian", x, y, normalisation="source")["mean"] == pytest.approx(1.0)
    with pytest.raises(SparsealignError, match="normalisation"):
        score("hungarian", x, y, normalisation="mean")


def test_full_matrix_metrics_respect_the_budget():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 400))
    with pytest.raises(SparsealignError, match="memory_budget_mb"):
        score("hungarian", x, x, memory_budget_mb=1)
    for metric in ("ridge", "procrustes"):
        with pytest.raises(SparsealignError, match="memory_budget_mb"):
            score(metric, x, x, memory_budget_mb=0.1)
