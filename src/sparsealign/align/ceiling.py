"""Noise ceilings from repeated trials, and ceiling-normalised scores.

The ceiling of a unit is the reliability of its repeat-averaged response: the Pearson r
between the means of two random halves of the repeats (averaged over random splits),
stepped up to the full repeat count with the Spearman–Brown formula c = 2r / (1 + r).
A model's test correlation r with the repeat mean is normalised as sign(r)·r² / c, the
fraction of explainable variance explained.
"""

from __future__ import annotations

import numpy as np

from sparsealign.errors import fail

CEILING_FORMULA = ("c = 2r/(1+r) (Spearman–Brown) with r = Pearson r across stimuli between "
                   "the means of two random halves of the repeats, averaged over splits")
NORMALISED_FORMULA = "sign(r)·r²/c per target unit, mean over units with c > 0"


def noise_ceiling(trials, n_splits: int = 20, seed: int = 0) -> dict:
    """Split-half, Spearman–Brown-corrected reliability per unit and for the population.

    Parameters
    ----------
    trials : (n_stimuli, n_units, n_repeats) array; NaN marks a repeat not recorded.
    n_splits : random half splits averaged.

    Returns
    -------
    dict with ``mean`` and ``median`` ceilings over units with c > 0 (the population
    ceiling), ``split_half_mean``, ``n_unreliable`` (units with c ≤ 0), ``n_splits``,
    ``formula``, ``per_unit`` (c per unit, a list) and ``_per_unit`` (the same, an array).
    """
    t = np.asarray(trials, dtype=np.float64)
    if t.ndim != 3 or t.shape[2] < 2:
        raise fail("target_repeats", f"shape {t.shape}",
                   "(stimulus, unit, repeat) with at least 2 repeats")
    if np.isinf(t).any():
        raise fail("target_repeats", "infinite values", "finite values or NaN padding")
    recorded = np.isfinite(t)
    count = recorded.sum(axis=2)
    if (count < 2).any():
        raise fail("target_repeats", f"{int((count < 2).any(axis=1).sum())} stimuli have "
                   "fewer than 2 recorded repeats for some unit", "at least 2 per stimulus")
    rng = np.random.default_rng(seed)
    values = np.where(recorded, t, 0.0)
    split_r = []
    for _ in range(n_splits):
        # Random ranks among each cell's recorded repeats; the first half goes to A.
        keys = np.where(recorded, rng.random(t.shape), np.inf)
        rank = keys.argsort(axis=2).argsort(axis=2)
        in_a = rank < (count // 2)[:, :, None]
        in_b = recorded & ~in_a
        mean_a = (values * in_a).sum(axis=2) / in_a.sum(axis=2)
        mean_b = (values * in_b).sum(axis=2) / in_b.sum(axis=2)
        split_r.append(_column_r(mean_a, mean_b))
    r = np.clip(np.mean(split_r, axis=0), -1 + 1e-12, 1.0)
    c = 2 * r / (1 + r)
    reliable = c > 0
    return {"mean": float(c[reliable].mean()) if reliable.any() else 0.0,
            "median": float(np.median(c[reliable])) if reliable.any() else 0.0,
            "split_half_mean": float(r.mean()), "n_unreliable": int((~reliable).sum()),
            "n_splits": int(n_splits), "formula": CEILING_FORMULA,
            "per_unit": [float(v) for v in c], "_per_unit": c}


def _column_r(a, b):
    ac, bc = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((ac ** 2).sum(axis=0) * (bc ** 2).sum(axis=0))
    return np.where(denom > 0, (ac * bc).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)


def normalise(r_per_unit, ceiling_per_unit) -> dict:
    """Ceiling-normalised score sign(r)·r²/c over units with c > 0 (and a score).

    Returns ``mean``, ``raw_mean_r`` (the same units, unnormalised), ``n_units`` and
    ``formula``.
    """
    r = np.asarray(r_per_unit, dtype=np.float64)
    c = np.asarray(ceiling_per_unit, dtype=np.float64)
    keep = np.isfinite(r) & (c > 0)
    if not keep.any():
        return {"mean": None, "raw_mean_r": None, "n_units": 0, "formula": NORMALISED_FORMULA}
    value = np.sign(r[keep]) * r[keep] ** 2 / c[keep]
    return {"mean": float(value.mean()), "raw_mean_r": float(r[keep].mean()),
            "n_units": int(keep.sum()), "formula": NORMALISED_FORMULA}
