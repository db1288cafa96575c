"""Unit-level alignment: semi-matching, one-to-one (Hungarian) and soft matching (OT).

All three select a mapping on the fit split's correlations and score the same pairs on
the test split (:mod:`sparsealign.align.correlation`). Units constant on a fit split are
dropped for that fold and counted; a pair with a unit constant on the test split scores 0.

With ``keep_terms=True`` each returns ``_terms``: per fold, the scored pairs as
:class:`~sparsealign.align.bootstrap.FoldTerms` (test rows, the paired source and target
columns, weights) whose weighted test correlations give the fold score exactly — the
input of the fast test-set bootstrap (:mod:`sparsealign.align.bootstrap`).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from sparsealign.align.bootstrap import FoldTerms, fold_test_rows
from sparsealign.align.correlation import (DEFAULT_MEMORY_BUDGET_MB, check_matrix,
                                           split_correlations)
from sparsealign.errors import fail

DEFAULT_EPSILON = 0.01
"""Default entropic regularisation for soft_mode="sinkhorn", in units of the cost 1 − r."""

HUNGARIAN_NORMALISATIONS = {
    "pairs": "mean test r over the min(p, q) matched pairs",
    "source": "sum of test r over matched pairs / p (unmatched source units count 0)",
    "target": "sum of test r over matched pairs / q (unmatched target units count 0)",
}


def _dropped(corr) -> dict:
    return {"dropped_source": int((~corr.source_fit_ok).sum(axis=1).max()),
            "dropped_target": int((~corr.target_fit_ok).sum(axis=1).max())}


def _pair_terms(source, target, fold_of, fold: int, src_idx, tgt_idx, weights) -> FoldTerms:
    """Test terms of one fold: source column ``src_idx[t]`` paired with ``tgt_idx[t]``."""
    rows = fold_test_rows(fold_of, source.shape[0])[fold]
    return FoldTerms(rows, source[np.ix_(rows, src_idx)], target[np.ix_(rows, tgt_idx)],
                     weights)


def _require_units(ok_source, ok_target, fold: int):
    if not ok_source.any() or not ok_target.any():
        raise fail("align", f"fold {fold}: every source or every target unit is constant "
                   "on the fit split", "units that vary across stimuli")


def semi_matching(source, target, fold_of=None, *, memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB,
                  device="auto", precision="auto", keep_terms=False) -> dict:
    """Semi-matching in both directions, plus mutual-best pairs, from one streamed pass.

    Forward (source → target): for each target unit, the source unit with the highest
    fit-split correlation; its test-split correlation, averaged over target units.
    Reverse swaps the roles. A mutual-best pair is a (source, target) pair that is each
    other's choice. Never holds more than one block of the p×q matrix.

    Returns
    -------
    dict with ``folds`` (forward score per fold), ``reverse_folds``, ``mutual_pairs``
    (pairs per fold), ``mutual_folds`` (mean test r over mutual pairs; None if none),
    ``dropped_*``, ``precision``, ``block_columns`` and ``_per_target`` (forward test r
    per target, averaged over folds; NaN where never scored). ``keep_terms``: also
    ``_terms``, per fold each kept target paired with its train-chosen source unit,
    weight 1 / (kept targets) (forward direction only).
    """
    corr = split_correlations(source, target, fold_of, memory_budget_mb=memory_budget_mb,
                              device=device, precision=precision)
    be, xp = corr.backend, corr.backend.xp
    k, p = corr.source_fit_ok.shape
    q = corr.target_fit_ok.shape[1]
    for f in range(k):
        _require_units(corr.source_fit_ok[f], corr.target_fit_ok[f], f)
    any_source_dropped = not corr.source_fit_ok.all()
    src_drop = be.asarray(~corr.source_fit_ok, bool)[:, :, None]
    fwd_best = np.empty((k, q), dtype=np.int64)
    fwd_test = np.empty((k, q))
    rev_val = be.full((k, p), -np.inf, corr.precision)
    rev_test = be.full((k, p), 0.0, corr.precision)
    rev_best = be.full((k, p), 0, "int64")
    for start, stop, r_fit, r_eval in corr.blocks():
        # Dropped units can never be chosen. A dropped target's own choice and a dropped
        # source's own choice are not scored, so one in-place mask serves both directions.
        if any_source_dropped:
            be.fill_where(r_fit, src_drop, -np.inf)
        if not corr.target_fit_ok[:, start:stop].all():
            be.fill_where(r_fit, be.asarray(~corr.target_fit_ok[:, None, start:stop], bool),
                          -np.inf)
        choice = r_fit.argmax(axis=1)[:, None, :]
        fwd_best[:, start:stop] = be.to_numpy(choice[:, 0, :])
        fwd_test[:, start:stop] = be.to_numpy(be.take_along(r_eval, choice, 1)[:, 0, :])
        choice = r_fit.argmax(axis=2)[:, :, None]
        value = be.take_along(r_fit, choice, 2)[:, :, 0]
        better = value > rev_val  # strict: ties keep the earlier target, as argmax does
        rev_val = xp.where(better, value, rev_val)
        rev_test = xp.where(better, be.take_along(r_eval, choice, 2)[:, :, 0], rev_test)
        rev_best = xp.where(better, choice[:, :, 0] + start, rev_best)
        del r_fit, r_eval, choice, value, better  # so that two blocks never coexist
    rev_best, rev_test = be.to_numpy(rev_best), be.to_numpy(rev_test).astype(np.float64)
    fwd_ok, rev_ok = corr.target_fit_ok, corr.source_fit_ok
    mutual = fwd_ok & (np.take_along_axis(rev_best, fwd_best, 1) == np.arange(q)) \
        & np.take_along_axis(rev_ok, fwd_best, 1)
    per_target = np.where(fwd_ok, fwd_test, 0.0).sum(0) / np.maximum(fwd_ok.sum(0), 1)
    terms = {}
    if keep_terms:
        terms["_terms"] = [_pair_terms(source, target, fold_of, f, fwd_best[f, fwd_ok[f]],
                                       np.flatnonzero(fwd_ok[f]),
                                       np.full(fwd_ok[f].sum(), 1.0 / fwd_ok[f].sum()))
                           for f in range(k)]
    return {
        "folds": _masked_means(fwd_test, fwd_ok),
        "reverse_folds": _masked_means(rev_test, rev_ok),
        "mutual_pairs": mutual.sum(axis=1).tolist(),
        "mutual_folds": _masked_means(fwd_test, mutual),
        "precision": corr.precision,
        "block_columns": corr.block_columns,
        "_per_target": np.where(fwd_ok.any(0), per_target, np.nan),
        **_dropped(corr),
        **terms,
    }


def _masked_means(values, keep) -> list:
    """Mean of ``values[f][keep[f]]`` per fold; None where nothing is kept."""
    counts = keep.sum(axis=1)
    sums = np.where(keep, values, 0.0).sum(axis=1)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def hungarian(source, target, fold_of=None, *, normalisation="pairs",
              memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, device="auto",
              precision="auto", keep_terms=False) -> dict:
    """One-to-one matching maximising the summed fit-split correlation, scored on test.

    ``normalisation`` is one of :data:`HUNGARIAN_NORMALISATIONS` and is stated in the
    result; units dropped on the fit split count as unmatched. ``keep_terms``: also
    ``_terms``, per fold the matched pairs with weight 1 / (the normalisation's count).
    """
    if normalisation not in HUNGARIAN_NORMALISATIONS:
        raise fail("align.hungarian.normalisation", repr(normalisation),
                   f"one of {sorted(HUNGARIAN_NORMALISATIONS)}")
    corr, r_fit, r_eval = _full(source, target, fold_of, memory_budget_mb, device, precision)
    p, q = r_fit.shape[1:]
    folds, terms = [], []
    for f in range(corr.n_folds):
        s_ok, t_ok = corr.source_fit_ok[f], corr.target_fit_ok[f]
        _require_units(s_ok, t_ok, f)
        rows, cols = linear_sum_assignment(r_fit[f][np.ix_(s_ok, t_ok)], maximize=True)
        total = r_eval[f][np.ix_(s_ok, t_ok)][rows, cols].sum()
        denominator = {"pairs": rows.size, "source": p, "target": q}[normalisation]
        folds.append(float(total / denominator))
        if keep_terms:
            terms.append(_pair_terms(source, target, fold_of, f, np.flatnonzero(s_ok)[rows],
                                     np.flatnonzero(t_ok)[cols],
                                     np.full(rows.size, 1.0 / denominator)))
    return {"folds": folds, "normalisation": normalisation,
            "normalisation_formula": HUNGARIAN_NORMALISATIONS[normalisation],
            **_dropped(corr), **({"_terms": terms} if keep_terms else {})}


def _full(source, target, fold_of, memory_budget_mb, device, precision):
    corr = split_correlations(source, target, fold_of, memory_budget_mb=memory_budget_mb,
                              device=device, precision=precision)
    return (corr,) + corr.full(memory_budget_mb)


def soft_matching(source, target, fold_of=None, *, soft_mode="exact", epsilon=None,
                  memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, device="auto", precision="auto",
                  max_iter=None, keep_terms=False) -> dict:
    """Soft matching: optimal transport between the unit sets, scored on the test split.

    The plan P* minimises Σ P_ij (1 − r_fit,ij) with uniform marginals 1/p and 1/q over
    the units that vary on the fit split; the score is Σ P*_ij r_test,ij. Symmetric.
    ``soft_mode="exact"`` or ``"sinkhorn"`` (entropic; see :func:`transport_plan`).
    ``keep_terms``: also ``_terms``, per fold the support pairs of P* with weights P*_ij
    (sinkhorn's dense plan: its smallest entries, of total mass ≤ :data:`TERMS_MASS_DROPPED`,
    are left out, so its terms reproduce the fold score to that tolerance).
    """
    corr, r_fit, r_eval = _full(source, target, fold_of, memory_budget_mb, device, precision)
    folds, solvers, eps_used, terms = [], [], [], []
    for f in range(corr.n_folds):
        s_ok, t_ok = corr.source_fit_ok[f], corr.target_fit_ok[f]
        _require_units(s_ok, t_ok, f)
        plan, info = transport_plan(r_fit[f][np.ix_(s_ok, t_ok)], mode=soft_mode,
                                    epsilon=epsilon, max_iter=max_iter)
        folds.append(float((plan * r_eval[f][np.ix_(s_ok, t_ok)]).sum()))
        solvers.append(info["solver"])
        eps_used.append(info.get("epsilon"))
        if keep_terms:
            i, j = _support(plan)
            terms.append(_pair_terms(source, target, fold_of, f, np.flatnonzero(s_ok)[i],
                                     np.flatnonzero(t_ok)[j], plan[i, j]))
    out = {"folds": folds, "soft_mode": soft_mode, "solver": sorted(set(solvers)),
           **_dropped(corr), **({"_terms": terms} if keep_terms else {})}
    if soft_mode == "sinkhorn":
        out["epsilon"] = float(eps_used[0])
    return out


TERMS_MASS_DROPPED = 1e-12
"""Total plan mass of the smallest entries left out of soft matching's test terms."""


def _support(plan):
    """Indices (i, j) of the plan entries kept as terms: all nonzero entries but the
    smallest ones of total mass ≤ :data:`TERMS_MASS_DROPPED` (Sinkhorn's plan is dense)."""
    flat = plan.ravel()
    order = np.argsort(flat, kind="stable")
    small = np.cumsum(flat[order]) <= TERMS_MASS_DROPPED
    keep = np.ones(flat.size, dtype=bool)
    keep[order[small]] = False
    keep &= flat > 0
    return np.unravel_index(np.flatnonzero(keep), plan.shape)


def transport_plan(similarity, *, mode="exact", epsilon=None, max_iter=None):
    """Optimal transport plan between rows and columns of a similarity matrix.

    Uniform marginals 1/p (rows) and 1/q (columns), cost 1 − similarity.

    Parameters
    ----------
    similarity : (p, q) array
    mode : "exact" or "sinkhorn"
        exact: p = q → Hungarian (plan = permutation / p); q | p or p | q → Hungarian on
        the smaller side repeated (the transport polytope has integral vertices); else
        network simplex (POT ``ot.emd``), which raises if it did not converge.
        sinkhorn: entropic OT in the log domain with ε-scaling down to ``epsilon``
        (default :data:`DEFAULT_EPSILON`); its ε is returned with the plan.
    max_iter : int, optional
        Iteration cap for the network simplex (default max(1e6, 50·p·q)) or Sinkhorn
        (default 10,000 per ε stage).

    Returns
    -------
    plan : (p, q) array, info : dict with ``solver`` (and ``epsilon`` for sinkhorn).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    p, q = sim.shape
    if mode == "sinkhorn":
        return _sinkhorn(1.0 - sim, epsilon, max_iter or 10_000)
    if mode != "exact":
        raise fail("align.soft_mode", repr(mode), '"exact" or "sinkhorn"')
    if p % q == 0 or q % p == 0:
        reps_row, reps_col = max(1, q // p), max(1, p // q)
        rows, cols = linear_sum_assignment(
            np.repeat(np.repeat(sim, reps_row, axis=0), reps_col, axis=1), maximize=True)
        plan = np.zeros((p, q))
        np.add.at(plan, (rows // reps_row, cols // reps_col), 1.0 / max(p, q))
        return plan, {"solver": "hungarian" if p == q else "hungarian_repeated"}
    return _network_simplex(1.0 - sim, max_iter or max(1_000_000, 50 * p * q)), \
        {"solver": "network_simplex"}


def _network_simplex(cost, max_iter):
    import ot

    p, q = cost.shape
    with warnings.catch_warnings():  # POT warns on non-convergence; we raise instead
        warnings.simplefilter("ignore", UserWarning)
        plan, log = ot.emd(np.full(p, 1.0 / p), np.full(q, 1.0 / q),
                           np.ascontiguousarray(cost), numItermax=int(max_iter), log=True)
    if log.get("result_code") != 1:
        raise fail("align.soft_matching", f"exact OT did not converge on a {p}×{q} problem "
                   f"({log.get('warning') or 'result_code ' + str(log.get('result_code'))})",
                   "a larger max_iter, or soft_mode='sinkhorn'")
    return plan


def _sinkhorn(cost, epsilon, max_iter, tol=1e-6, check_every=10):
    """Log-domain Sinkhorn with ε-scaling; raises if the final stage does not converge.

    Dual potentials f, g are carried from each ε stage to the next (ε ÷ 4 per stage);
    intermediate stages only warm-start the next one (loose tolerance 1e-3), the final
    stage must bring the mean relative row-marginal error below ``tol``.
    """
    p, q = cost.shape
    log_a, log_b = np.full(p, -np.log(p)), np.full(q, -np.log(q))
    target = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    if target <= 0:
        raise fail("align.epsilon", f"{target:g}", "a positive number")
    f, g = np.zeros(p), np.zeros(q)
    eps = max(float(np.ptp(cost)), target)
    while True:
        final = eps <= target
        for it in range(max_iter):
            f = -eps * logsumexp((g[None, :] - cost) / eps + log_b[None, :], axis=1)
            g = -eps * logsumexp((f[:, None] - cost) / eps + log_a[:, None], axis=0)
            if (it + 1) % check_every == 0 or it + 1 == max_iter:
                log_plan = (f[:, None] + g[None, :] - cost) / eps + log_a[:, None] + log_b
                err = np.abs(np.exp(logsumexp(log_plan, axis=1) - log_a) - 1).mean()
                if err < (tol if final else 1e-3):
                    break
        if final:
            if err >= tol:
                raise fail("align.soft_matching", f"Sinkhorn did not converge at ε={eps:.3g} "
                           f"(marginal error {err:.2e} after {max_iter} iterations)",
                           "a larger epsilon or max_iter")
            return np.exp(log_plan), {"solver": "sinkhorn", "epsilon": target}
        eps = max(eps / 4, target)


def feature_recovery(features, units) -> dict:
    """How well known ground-truth features are recovered by a set of units (in-sample).

    Parameters
    ----------
    features : (n, f) true feature activations; units : (n, u) neurons or latents.
        Arrays with rows = the same stimuli, or two stores (matched on stimulus ids).

    Returns
    -------
    dict with ``best_corr`` (per kept feature: max over units of the signed Pearson r),
    ``best_corr_mean``, ``mcc`` (mean r over the min(f, u) pairs of the one-to-one
    Hungarian matching that maximises summed r; ``mcc_normalisation`` says so),
    ``dropped_features`` (constant everywhere) and ``dropped_units``.
    """
    if hasattr(features, "data_vars") and hasattr(units, "data_vars"):
        from sparsealign import schema

        features, units = schema.match_stimuli(features, units, "features", "units",
                                               mode="intersect", min_shared=2)
        features, units = schema.responses(features), schema.responses(units)
    x = check_matrix(features, "features", min_rows=2)
    y = check_matrix(units, "units", min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise fail("features vs units", f"{x.shape[0]} vs {y.shape[0]} stimuli",
                   "the same stimuli (rows) in both")
    corr = split_correlations(y, x, None, precision="float64")
    _, r = corr.full()
    keep_units, keep_features = corr.source_fit_ok[0], corr.target_fit_ok[0]
    _require_units(keep_units, keep_features, 0)
    r = r[0][np.ix_(keep_units, keep_features)]
    best = r.max(axis=0)
    rows, cols = linear_sum_assignment(r, maximize=True)
    return {"best_corr": best.tolist(), "best_corr_mean": float(best.mean()),
            "mcc": float(r[rows, cols].mean()),
            "mcc_normalisation": "mean r over the min(features, units) matched pairs",
            "dropped_features": int((~keep_features).sum()),
            "dropped_units": int((~keep_units).sum())}
