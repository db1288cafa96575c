"""Population metrics: RSA, linear CKA (biased/debiased), Procrustes, mutual k-NN."""

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from sparsealign.align import score
from sparsealign.align.population import dissimilarity_matrix
from sparsealign.errors import SparsealignError


def test_debiased_cka_is_zero_on_independent_data_with_p_much_larger_than_n():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 3000)), rng.standard_normal((100, 2000))
    debiased = score("cka_debiased", x, y, n_folds=1)["mean"]
    biased = score("cka", x, y, n_folds=1)["mean"]
    assert abs(debiased) < 0.02
    assert biased > 0.8  # the plug-in estimator is dominated by its bias here


def test_cka_matches_the_kernel_formula():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 9))
    h = np.eye(40) - 1 / 40
    kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
    expected = (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())
    assert score("cka", x, y, n_folds=1)["mean"] == pytest.approx(expected)


@pytest.mark.parametrize("compare,fn", [("spearman", spearmanr), ("kendall", kendalltau)])
def test_rsa_comparisons(compare, fn):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5))
    y = x @ rng.standard_normal((5, 8)) + rng.standard_normal((30, 8))
    got = score("rsa", x, y, n_folds=1, compare=compare)
    want = fn(dissimilarity_matrix(x), dissimilarity_matrix(y))[0]
    assert got["mean"] == pytest.approx(want) and got["compare"] == compare
    euclid = score("rsa", x, y, n_folds=1, rdm="euclidean", compare="pearson")["mean"]
    assert euclid == pytest.approx(np.corrcoef(dissimilarity_matrix(x, "euclidean"),
                                               dissimilarity_matrix(y, "euclidean"))[0, 1])
    with pytest.raises(SparsealignError, match="rdm"):
        score("rsa", x, y, rdm="cosine")


def test_procrustes_in_sample_is_the_nuclear_norm_ratio():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 7))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(xc.T @ yc, "nuc") / np.linalg.norm(xc) / np.linalg.norm(yc)
    result = score("procrustes", x, y, n_folds=1)
    assert result["mean"] == pytest.approx(expected)
    assert result["angle_mean"] == pytest.approx(np.arccos(expected))


def test_mutual_knn_chance_level():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8))
    result = score("mutual_knn", x, y, k=5)
    assert result["mean"] < 0.08 and result["k"] == 5   # chance ≈ k / 200 per fold
