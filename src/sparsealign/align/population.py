"""Population-level similarity: RSA, linear CKA (biased and debiased), Procrustes, mutual k-NN.

RSA, CKA and mutual k-NN fit no mapping, so under cross-validation they are computed on
each held-out fold (the folds give the SEM); Procrustes fits its rotation on the train
folds and is scored on the test fold. Units constant on the split a metric is computed
from are dropped and counted; with linear kernels they would contribute nothing anyway.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist

from sparsealign.align.correlation import (DEFAULT_MEMORY_BUDGET_MB, _Backend, check_budget,
                                           constant_on_splits, fold_data, fold_sums)
from sparsealign.errors import fail

RDMS = ("correlation", "euclidean")
COMPARISONS = ("spearman", "kendall", "pearson")


def _per_test_fold(fn, x, y, fold_of, min_rows, max_stimuli=None) -> dict:
    """Apply ``fn(x_fold, y_fold)`` on each test fold (all rows in-sample)."""
    folds = np.zeros(x.shape[0], dtype=np.int64) if fold_of is None else fold_of
    _, x_const = constant_on_splits(x, fold_of)
    _, y_const = constant_on_splits(y, fold_of)
    values = []
    for k in range(x_const.shape[0]):
        rows = np.flatnonzero(folds == k)
        if max_stimuli is not None and rows.size > max_stimuli:
            rows = np.sort(np.random.default_rng(k).choice(rows, max_stimuli, replace=False))
        if rows.size < min_rows:
            raise fail("align", f"fold {k} has {rows.size} stimuli",
                       f"at least {min_rows} per fold for this metric (use fewer folds)")
        if x_const[k].all() or y_const[k].all():
            raise fail("align", f"fold {k}: every source or every target unit is constant",
                       "units that vary across stimuli")
        values.append(float(fn(x[np.ix_(rows, ~x_const[k])].astype(np.float64, copy=False),
                               y[np.ix_(rows, ~y_const[k])].astype(np.float64, copy=False))))
    return {"folds": values, "dropped_source": int(x_const.sum(axis=1).max()),
            "dropped_target": int(y_const.sum(axis=1).max())}


def dissimilarity_matrix(x, kind="correlation") -> np.ndarray:
    """Condensed representational dissimilarity matrix over the rows (stimuli) of ``x``.

    ``correlation``: 1 − Pearson r between stimulus patterns across units (a pattern with
    no variance across units has r = 0 with every other); ``euclidean``: distances.
    """
    if kind == "euclidean":
        return pdist(x)
    centred = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)
    gram = unit @ unit.T
    return 1.0 - gram[np.triu_indices(x.shape[0], k=1)]


def rsa(source, target, fold_of=None, *, rdm="correlation", compare="spearman",
        max_stimuli=1000) -> dict:
    """Representational similarity: correlation between the two RDMs' upper triangles.

    Parameters
    ----------
    rdm : "correlation" (1 − Pearson, default) or "euclidean".
    compare : "spearman" (default), "kendall" (tau-b) or "pearson".
    max_stimuli : per fold, a fixed random subset of at most this many stimuli
        (RDMs grow as stimuli²).
    """
    if compare not in COMPARISONS:
        raise fail("align.rsa.compare", repr(compare), f"one of {COMPARISONS}")
    if rdm not in RDMS:
        raise fail("align.rsa.rdm", repr(rdm), f"one of {RDMS}")

    def one(x, y):
        a, b = dissimilarity_matrix(x, rdm), dissimilarity_matrix(y, rdm)
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return 0.0
        if compare == "kendall":
            return stats.kendalltau(a, b)[0]
        if compare == "spearman":
            a, b = _rank(a), _rank(b)
        return np.corrcoef(a, b)[0, 1]

    out = _per_test_fold(one, source, target, fold_of, 4, max_stimuli)
    return {**out, "rdm": rdm, "compare": compare, "max_stimuli": int(max_stimuli)}


def _rank(values):
    """Ranks 1…n with ties given their average rank (as in Spearman's r)."""
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _centre(x):
    return x - x.mean(axis=0)


def _cross_norm2(x, y) -> float:
    """‖XᵀY‖²_F, through whichever of the feature or the stimulus space is smaller."""
    n, p = x.shape
    q = y.shape[1]
    if p * q <= n * n:
        return float(((x.T @ y) ** 2).sum())
    return float(((x @ x.T) * (y @ y.T)).sum())


def _cka_biased(x, y) -> float:
    x, y = _centre(x), _centre(y)
    return _cross_norm2(x, y) / np.sqrt(_cross_norm2(x, x) * _cross_norm2(y, y))


def _hsic_unbiased(x, y) -> float:
    """Unbiased HSIC with linear kernels (Song et al. 2012), without forming n×n kernels."""
    n = x.shape[0]
    dk, dl = (x ** 2).sum(axis=1), (y ** 2).sum(axis=1)
    k1 = x @ x.sum(axis=0) - dk   # K̃1, the kernel with its diagonal zeroed, times 1
    l1 = y @ y.sum(axis=0) - dl
    trace = _cross_norm2(x, y) - dk @ dl
    return float((trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3)))


def _cka_debiased(x, y) -> float:
    x, y = _centre(x), _centre(y)
    hxx, hyy = _hsic_unbiased(x, x), _hsic_unbiased(y, y)
    if hxx <= 0 or hyy <= 0:  # too few stimuli for a positive self-similarity estimate
        return 0.0
    return _hsic_unbiased(x, y) / np.sqrt(hxx * hyy)


def cka(source, target, fold_of=None) -> dict:
    """Linear CKA (Kornblith et al. 2019), biased (plug-in HSIC) form, per test fold."""
    return {**_per_test_fold(_cka_biased, source, target, fold_of, 2), "estimator": "biased"}


def cka_debiased(source, target, fold_of=None) -> dict:
    """Linear CKA from the unbiased HSIC estimator (≈ 0 for independent data at any p/n)."""
    return {**_per_test_fold(_cka_debiased, source, target, fold_of, 4),
            "estimator": "unbiased HSIC (Song et al. 2012)"}


def procrustes(source, target, fold_of=None, *,
               memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB) -> dict:
    """Cross-validated Procrustes similarity cos θ and angle θ (radians).

    On the train split both sets are centred and the (semi-)orthogonal Q = UVᵀ from
    XᵀY = USVᵀ is fitted; the score is ⟨X_test Q, Y_test⟩ / (‖X_test‖ ‖Y_test‖) with the
    train means removed. In-sample it is ‖XᵀY‖_* / (‖X‖ ‖Y‖), the cosine of the
    Procrustes angle (Williams et al. 2021). Computed from per-fold sums in one pass.
    """
    p, q = source.shape[1], target.shape[1]
    n_folds = 1 if fold_of is None else int(np.max(fold_of)) + 1
    check_budget(f"per-fold {p}×{q} cross-products on {n_folds} folds",
                 (n_folds + 2) * p * q * 8, memory_budget_mb, "use fewer units")
    be = _Backend("cpu")
    x_const, _ = constant_on_splits(source, fold_of)
    y_const, _ = constant_on_splits(target, fold_of)
    xf, yf = (fold_data(a, fold_of, be, "float64") for a in (source, target))
    sums = fold_sums(xf, yf, np)
    scale = xf.scale[:, None] * yf.scale[None, :]  # back from standardised to raw units
    values = []
    for k in range(xf.n_folds):
        xi, yi = ~x_const[k], ~y_const[k]
        fit, test = sums.fit(k), sums.eval(k)
        u, _, vt = np.linalg.svd((fit.centred_cross() * scale)[np.ix_(xi, yi)],
                                 full_matrices=False)
        mx, my = fit.means()
        inner = ((u @ vt) * (test.centred_cross(mx, my) * scale)[np.ix_(xi, yi)]).sum()
        ssx, ssy = test.centred_squares(mx, my)
        norm = np.sqrt((ssx * xf.scale ** 2)[xi].sum() * (ssy * yf.scale ** 2)[yi].sum())
        values.append(float(inner / norm) if norm > 0 else 0.0)
    return {"folds": values,
            "angle_folds": [float(np.arccos(np.clip(v, -1.0, 1.0))) for v in values],
            "dropped_source": int(x_const.sum(axis=1).max()),
            "dropped_target": int(y_const.sum(axis=1).max())}


def _knn(x, k):
    sq = (x ** 2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(dist, np.inf)
    return np.argpartition(dist, k, axis=1)[:, :k]


def mutual_knn(source, target, fold_of=None, *, k=10, max_stimuli=1000) -> dict:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024), per test fold.

    For each stimulus, the fraction of its k nearest neighbours (Euclidean, centred
    units) that the two representations share; averaged over stimuli. Chance ≈ k/n.
    """
    k = int(k)

    def one(x, y):
        a, b = _knn(_centre(x), k), _knn(_centre(y), k)
        return (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2)).mean() / k

    out = _per_test_fold(one, source, target, fold_of, k + 2, max_stimuli)
    return {**out, "k": k, "max_stimuli": int(max_stimuli)}
