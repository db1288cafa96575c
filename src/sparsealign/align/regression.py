"""Cross-validated ridge predictivity with one eigendecomposition per fold.

Per fold, source and target are standardised with training statistics (no intercept is
then needed). The training design is decomposed once, primal or dual by shape:

- primal (n_train ≥ p): eigh of the p×p Gram XᵀX = V Λ Vᵀ;
- dual (n_train < p): eigh of the n×n kernel XXᵀ = Q Λ Qᵀ.

Either way, with the projections R = diag(Λ^-½) Vᵀ XᵀY (primal) or R = QᵀY (dual), the
training residual, the effective degrees of freedom and the test predictions for *every*
α and target are cheap closed forms, so α is chosen per target by generalised
cross-validation (GCV, Golub, Heath & Wahba 1979) on the training fold only, at
O(rank · targets) per α. Components with eigenvalue below λ_max · max(n, p) · eps are
treated as exact zeros (rank-deficient designs, e.g. duplicated units).
"""

from __future__ import annotations

import numpy as np

from sparsealign.align.bootstrap import FoldTerms, fold_test_rows
from sparsealign.align.correlation import (DEFAULT_MEMORY_BUDGET_MB, _Backend, check_budget,
                                           constant_on_splits, fold_data, fold_sums,
                                           resolve_device, working_precision)
from sparsealign.errors import fail

DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-8, 9))
ALPHA_SELECTION = "GCV on the training fold, per target"


def ridge(source, target, fold_of=None, *, alphas=DEFAULT_ALPHAS, device="auto",
          precision="float64", memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB,
          keep_terms=False) -> dict:
    """Ridge predictivity source → target: Pearson r (and R²) per target on test folds.

    Parameters
    ----------
    source, target : (n, p), (n, q) finite arrays.
    fold_of : (n,) test-fold labels, or None for in-sample (fit and score on all rows).
    alphas : sequence of positive floats, the grid searched per target.
    device : "auto" (CUDA for large problems when present, else NumPy), "cpu",
        "cuda[:i]" or "torch:<dev>"; precision : "float64" or "float32".
    memory_budget_mb : bound on the per-fold Gram matrices (primal) or kernel (dual).
    keep_terms : also return ``_terms``: per fold, the test rows, the out-of-fold
        predictions and the targets kept on that fold, weight 1 / (kept targets) each
        (:class:`~sparsealign.align.bootstrap.FoldTerms`, for the test-set bootstrap).

    Returns
    -------
    dict with ``folds`` (mean test r over kept targets per fold), ``median_folds``
    (median over targets), ``r2_folds``, ``alpha_median``, ``alpha_grid``,
    ``alpha_selection``, ``solver`` ("primal"/"dual" per fold), ``dropped_*``, and ``_per_target`` /
    ``_per_target_r2`` (test r and R² per target, averaged over the folds that scored it).
    """
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.all(alphas > 0):
        raise fail("align.ridge.alphas", f"{alphas.tolist()}",
                   "a non-empty list of positive numbers")
    n, p = source.shape
    be = _Backend(resolve_device(device, n * p * (p + target.shape[1])))
    precision = working_precision(precision, be.device, 0)
    src_const, _ = constant_on_splits(source, fold_of)
    tgt_const, _ = constant_on_splits(target, fold_of)
    xf = fold_data(source, fold_of, be, precision)
    yf = fold_data(target, fold_of, be, precision)
    n_train = [n - (0 if xf.in_sample else hi - lo) for lo, hi in xf.rows]
    primal = [n_tr >= (~src_const[k]).sum() for k, n_tr in enumerate(n_train)]
    q, itemsize = target.shape[1], np.dtype(precision).itemsize
    check_budget(f"ridge's Gram matrices and kernels ({p} features, {q} targets)",
                 itemsize * max((xf.n_folds + 2) * p * (p + q) if is_primal else
                                3 * n_tr * n_tr + 2 * n_tr * (p + q)
                                for is_primal, n_tr in zip(primal, n_train)),
                 memory_budget_mb, "use fewer units")
    grams = fold_sums(xf, xf, be.xp) if any(primal) else None
    cross = fold_sums(xf, yf, be.xp) if any(primal) else None
    r_sum, r2_sum, r_count = (np.zeros(target.shape[1]) for _ in range(3))
    means, medians, r2s, chosen, terms = [], [], [], [], []
    test_rows = fold_test_rows(fold_of, n) if keep_terms else None
    for k in range(xf.n_folds):
        s_ok, t_ok = ~src_const[k], ~tgt_const[k]
        if not s_ok.any() or not t_ok.any():
            raise fail("align.ridge", f"fold {k}: every source or every target unit is "
                       "constant on the training split", "units that vary across stimuli")
        fit = _primal if primal[k] else _dual
        pred, y_test, alpha = fit(be, xf, yf, k, s_ok, t_ok, alphas,
                                  grams=grams, cross=cross)
        pred = be.to_numpy(pred).astype(np.float64)
        y_test = be.to_numpy(y_test).astype(np.float64)
        r, r2 = _test_scores(pred, y_test)
        if keep_terms:
            terms.append(FoldTerms(test_rows[k], pred, y_test, np.full(r.size, 1.0 / r.size)))
        r_sum[t_ok] += r
        r2_sum[t_ok] += r2
        r_count[t_ok] += 1
        means.append(float(r.mean()))
        medians.append(float(np.median(r)))
        r2s.append(float(r2.mean()))
        chosen.append(be.to_numpy(alpha))
    return {
        "folds": means, "median_folds": medians, "r2_folds": r2s,
        "alpha_median": float(np.median(np.concatenate(chosen))),
        "alpha_grid": [float(a) for a in alphas], "alpha_selection": ALPHA_SELECTION,
        "solver": ["primal" if is_primal else "dual" for is_primal in primal],
        "dropped_source": int(src_const.sum(axis=1).max()),
        "dropped_target": int(tgt_const.sum(axis=1).max()),
        "_per_target": np.where(r_count > 0, r_sum / np.maximum(r_count, 1), np.nan),
        "_per_target_r2": np.where(r_count > 0, r2_sum / np.maximum(r_count, 1), np.nan),
        **({"_terms": terms} if keep_terms else {}),
    }


def _select(be, keep):
    """Boolean column mask as an index usable by the backend (a view when all kept)."""
    if keep.all():
        return slice(None)
    return keep if be.xp is np else be.xp.as_tensor(np.flatnonzero(keep),
                                                    device=be.torch_device)


def _primal(be, xf, yf, k, s_ok, t_ok, alphas, *, grams, cross):
    """Fit from the training split's Gram XᵀX and XᵀY (sums minus fold k)."""
    xp = be.xp
    si, ti = _select(be, s_ok), _select(be, t_ok)
    fit = cross.fit(k)
    mx, my = fit.means()
    mx, my = mx[si], my[ti]
    cxx = grams.fit(k).centred_cross()[si][:, si]
    cxy = fit.centred_cross()[si][:, ti]
    sdx = (xp.diagonal(cxx) / fit.count) ** 0.5
    sdy = (fit.centred_squares()[1][ti] / fit.count) ** 0.5
    lam, vec = xp.linalg.eigh(cxx / (sdx[:, None] * sdx[None, :]))
    keep = _nonzero(xp, lam, fit.count, lam.shape[0])
    lam, vec = lam[keep], vec[:, keep]
    root = lam ** 0.5
    proj = (vec.T @ (cxy / (sdx[:, None] * sdy[None, :]))) / root[:, None]
    # ‖y‖² = n for a target standardised on this split; n ≫ p here, so no cancellation.
    outside = (fit.count - (proj ** 2).sum(axis=0)).clip(0)
    alpha = _gcv_alphas(be, lam, proj, outside, fit.count, alphas)
    coef = vec @ (proj * (root[:, None] / (lam[:, None] + alpha[None, :])))
    lo, hi = xf.rows[k]
    x_test = (xf.z[lo:hi][:, si] - mx) / sdx
    y_test = (yf.z[lo:hi][:, ti] - my) / sdy
    return x_test @ coef, y_test, alpha


def _dual(be, xf, yf, k, s_ok, t_ok, alphas, **_):
    """Fit from the eigendecomposition of the training kernel XXᵀ (n_train < p)."""
    xp = be.xp
    si, ti = _select(be, s_ok), _select(be, t_ok)
    lo, hi = xf.rows[k]
    if xf.in_sample:
        x_tr, y_tr = xf.z[:, si], yf.z[:, ti]
    else:
        x_tr = xp.concatenate([xf.z[:lo], xf.z[hi:]])[:, si]
        y_tr = xp.concatenate([yf.z[:lo], yf.z[hi:]])[:, ti]
    mx, my = x_tr.mean(axis=0), y_tr.mean(axis=0)
    x_tr, y_tr = x_tr - mx, y_tr - my
    sdx, sdy = (x_tr ** 2).mean(axis=0) ** 0.5, (y_tr ** 2).mean(axis=0) ** 0.5  # ddof 0
    x_tr, y_tr = x_tr / sdx, y_tr / sdy
    n = x_tr.shape[0]
    lam, vec = xp.linalg.eigh(x_tr @ x_tr.T)
    keep = _nonzero(xp, lam, n, x_tr.shape[1])
    # The eigenvectors span all of R^n, so the residual outside the kept span is exact.
    outside = ((vec[:, ~keep].T @ y_tr) ** 2).sum(axis=0)
    lam, vec = lam[keep], vec[:, keep]
    proj = vec.T @ y_tr
    alpha = _gcv_alphas(be, lam, proj, outside, n, alphas)
    x_test = (xf.z[lo:hi][:, si] - mx) / sdx
    y_test = (yf.z[lo:hi][:, ti] - my) / sdy
    return ((x_test @ x_tr.T) @ vec) @ (proj / (lam[:, None] + alpha[None, :])), y_test, alpha


def _nonzero(xp, lam, n, p):
    """Eigen-components above λ_max · max(n, p) · eps (the rest are numerically zero)."""
    return lam > lam[-1] * max(n, p) * xp.finfo(lam.dtype).eps


def _gcv_alphas(be, lam, proj, outside, n, alphas):
    """Per-target α minimising GCV(α) = RSS(α) / (n − 1 − dof(α))² on the training split.

    ``lam``: kept eigenvalues (r,); ``proj``: targets projected on the eigenvectors,
    (r, q); ``outside``: per-target residual sum of squares outside their span. The
    − 1 is the intercept removed by centring; without it GCV picks the smallest α
    whenever the training data can be interpolated (p ≥ n).
    """
    grid = be.like(alphas, lam)
    shrink = grid[:, None] / (lam[None, :] + grid[:, None])                 # (A, r)
    rss = outside[None, :] + (shrink ** 2) @ (proj ** 2)                     # (A, q)
    dof = (1.0 - shrink).sum(axis=1)                                         # (A,)
    return grid[(rss / (n - 1 - dof[:, None]).clip(1e-12) ** 2).argmin(axis=0)]


def _test_scores(pred, obs):
    """Pearson r and R² per column; 0 where the observation or prediction is constant."""
    ok_obs = obs.min(axis=0) < obs.max(axis=0)
    ok = ok_obs & (pred.min(axis=0) < pred.max(axis=0))
    pc = pred - pred.mean(axis=0)
    oc = obs - obs.mean(axis=0)
    pv, ov = (pc ** 2).sum(axis=0), (oc ** 2).sum(axis=0)
    r = np.where(ok, (pc * oc).sum(axis=0) / np.sqrt(np.where(ok, pv * ov, 1.0)), 0.0)
    sse = ((obs - pred) ** 2).sum(axis=0)
    r2 = np.where(ok_obs, 1.0 - sse / np.where(ok_obs, ov, 1.0), 0.0)
    return r, r2
