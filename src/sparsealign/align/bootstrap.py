"""Fast paired bootstrap of cross-validated scores over test stimuli (and SAE seeds).

"A gain is a paired difference with an interval": SAE − Neuron and SAE − RandomSAE are
recomputed on the *same* resamples of the stimuli, so what the stimuli share cancels.

What is resampled
-----------------
Every mapping metric (ridge, semi-, soft- and one-to-one matching) reduces, once its
mapping is fitted on each fold's training split, to a weighted sum of test-split
correlations. :func:`sparsealign.align.score` with ``keep_terms=True`` returns those
*test terms* per fold (:class:`FoldTerms`): the fold's test rows, two (n_test, T) arrays
``a`` and ``b`` and weights ``w`` (T,) with

    fold score = Σ_t w_t · pearson(a[:, t], b[:, t])

exactly on the original sample; the reported score is the plain mean over folds. The
bootstrap keeps each fold's fitted mapping and resamples the stimuli: a resample is a
vector of multinomial counts (:func:`resample_counts`), each fold's correlations are
recomputed on its test rows weighted by their counts (:func:`draws`), and the folds are
averaged as the metric averages them. This captures the stimulus-sampling uncertainty of
the test score, and — with :func:`seed_draws` — the uncertainty over SAE training seeds;
it does **not** capture refit variance (the mapping is not re-fitted per resample; see
:func:`sparsealign.align.crossval.bootstrap` for the slow full refit).

Known limit (measured, n = 120–300, 5 folds, 200 datasets): where the scores carry
signal (r ≈ 0.45) the bootstrap SD is 0.9–1.0 × the SD over datasets and 95 % intervals
of a null difference cover 0 in 90–96 % of datasets; where both scores sit near 0 (pure
noise) each test stimulus also moves the other folds' fitted maps, the SD is ≈ 0.7 ×
the true one and coverage drops to ≈ 80 %. Read "gain"/"loss" verdicts between two
near-zero scores with that in mind.

Import from this module by name (``from sparsealign.align.bootstrap import draws``):
the package attribute ``sparsealign.align.bootstrap`` is the older full-refit function.

Policies (as in :mod:`sparsealign.align.correlation`): a column that is constant on the
resampled test rows (or a fold with fewer than two distinct rows drawn) correlates 0.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsealign.align.correlation import fold_order
from sparsealign.errors import fail

DEFAULT_N_BOOT = 1000
DEFAULT_CI = 0.95
VERDICTS = ("gain", "loss", "no difference")

CHUNK_ELEMENTS = 4_000_000
"""Bootstrap rows per matrix product are chosen so one product holds ≲ this many values."""

CONSTANT_TOLERANCE = 1e-10
"""A column whose count-weighted variance is ≤ this fraction of its count-weighted sum of
squares about the test mean is constant on the resample (exactly constant columns only
leave rounding error there); it correlates 0."""

_COUNTS_STREAM, _SEEDS_STREAM = 3, 4  # crossval uses [seed, 1] and [seed, 2]


@dataclass(frozen=True)
class FoldTerms:
    """One fold's test terms: ``score = Σ_t weights[t] · pearson(a[:, t], b[:, t])``.

    Attributes
    ----------
    rows : (n_test,) int array
        The fold's test rows, as indices into the original stimuli.
    a, b : (n_test, T) float64 arrays
        Paired columns on those rows (ridge: prediction and target; matching: the
        matched source and target units).
    weights : (T,) float64 array
    """

    rows: np.ndarray
    a: np.ndarray
    b: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        rows = np.asarray(self.rows, dtype=np.int64)
        a = np.asarray(self.a, dtype=np.float64)
        b = np.asarray(self.b, dtype=np.float64)
        w = np.asarray(self.weights, dtype=np.float64).ravel()
        if a.ndim != 2 or a.shape != b.shape or a.shape != (rows.size, w.size):
            raise fail("align.bootstrap.terms", f"rows {rows.shape}, a {a.shape}, "
                       f"b {b.shape}, weights {w.shape}",
                       "a and b of shape (len(rows), len(weights))")
        for name, value in (("rows", rows), ("a", a), ("b", b), ("weights", w)):
            object.__setattr__(self, name, value)

    def score(self, counts=None) -> float:
        """The fold score on the original sample (``counts=None``) or one resample."""
        c = np.ones((1, self.rows.max(initial=-1) + 1)) if counts is None else \
            np.asarray(counts, dtype=np.float64)[None, :]
        return float(_fold_draws(self, c)[0])


def fold_test_rows(fold_of, n: int) -> list[np.ndarray]:
    """Each fold's test rows (indices into the stimuli); in-sample, one fold of all rows."""
    order, bounds = fold_order(fold_of, n)
    return [order[lo:hi] for lo, hi in bounds]


def resample_counts(n_stimuli: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """Multinomial resample counts, (n_boot, n_stimuli) int64; each row sums to n_stimuli.

    Row ``i`` says how often each stimulus appears in bootstrap resample ``i``. Share one
    array across every representation and comparison of a sample so that differences
    between scores are paired.
    """
    if int(n_stimuli) < 1 or int(n_boot) < 1:
        raise fail("align.bootstrap", f"n_stimuli={n_stimuli}, n_boot={n_boot}",
                   "positive integers")
    rng = np.random.default_rng([int(seed), _COUNTS_STREAM])
    return rng.multinomial(int(n_stimuli), np.full(int(n_stimuli), 1.0 / n_stimuli),
                           size=int(n_boot)).astype(np.int64)


def draws(terms, counts) -> np.ndarray:
    """Score on each resample: (n_boot,) float64.

    Parameters
    ----------
    terms : list of :class:`FoldTerms`, one per fold (as returned by ``score(...,
        keep_terms=True)["terms"]``).
    counts : (n_boot, n_stimuli) resample counts (:func:`resample_counts`).

    Each fold's weighted Pearson correlations come from count-weighted moments, five
    matrix products ``C_f @ [a, b, a², b², ab]`` over the fold's test rows (chunked over
    resamples); the fold scores are averaged with equal weight, as the metrics do.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise fail("align.bootstrap.counts", f"shape {counts.shape}",
                   "an (n_boot, n_stimuli) array")
    terms = list(terms)
    if not terms:
        raise fail("align.bootstrap.terms", "no folds", "one FoldTerms per fold")
    top = max(int(t.rows.max(initial=-1)) for t in terms)
    if top >= counts.shape[1]:
        raise fail("align.bootstrap.counts", f"{counts.shape[1]} stimuli",
                   f"at least {top + 1} (the terms' test rows)")
    counts = counts.astype(np.float64)
    return np.mean([_fold_draws(t, counts) for t in terms], axis=0)


def _fold_draws(terms: FoldTerms, counts: np.ndarray) -> np.ndarray:
    """One fold's score on each row of ``counts`` (float64, all stimuli as columns)."""
    a = terms.a - terms.a.mean(axis=0)  # centring keeps the moments well conditioned
    b = terms.b - terms.b.mean(axis=0)
    n_terms = a.shape[1]
    stacked = np.concatenate([a, b, a * a, b * b, a * b], axis=1)
    c = counts[:, terms.rows]
    out = np.empty(c.shape[0])
    step = max(1, CHUNK_ELEMENTS // max(1, stacked.shape[1]))
    keep = 1.0 - CONSTANT_TOLERANCE
    for lo in range(0, c.shape[0], step):
        chunk = c[lo:lo + step]
        inv_n = 1.0 / np.maximum(chunk.sum(axis=1), 1.0)[:, None]
        sums = chunk @ stacked
        sa, sb, saa, sbb, sab = (sums[:, i * n_terms:(i + 1) * n_terms] for i in range(5))
        tmp = np.multiply(sa, sa)
        tmp *= inv_n
        ok = saa * keep > tmp           # variance (saa − sa²/n) above the tolerance
        saa -= tmp
        np.multiply(sb, sb, out=tmp)
        tmp *= inv_n
        ok &= sbb * keep > tmp
        sbb -= tmp
        np.multiply(sa, sb, out=tmp)
        tmp *= inv_n
        sab -= tmp                      # count-weighted covariance
        saa *= sbb
        np.copyto(saa, 1.0, where=~ok)
        np.copyto(sab, 0.0, where=~ok)
        np.sqrt(saa, out=saa)
        sab /= saa
        out[lo:lo + step] = sab @ terms.weights
    return out


def seed_choices(n_seeds: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Seed indices resampled with replacement per bootstrap index: (n_boot, n_seeds)."""
    rng = np.random.default_rng([int(seed), _SEEDS_STREAM, int(n_seeds)])
    return rng.integers(0, int(n_seeds), size=(int(n_boot), int(n_seeds)))


def seed_draws(per_seed_draws, n_boot: int | None = None, seed: int = 0) -> np.ndarray:
    """Hierarchical bootstrap over SAE seeds: (n_boot,) draws.

    Bootstrap index ``i`` resamples the seeds with replacement (:func:`seed_choices`,
    determined by ``seed``, ``n_seeds`` and ``n_boot`` only) and averages the chosen
    seeds' draws at index ``i``. Every call with the same ``seed`` and seed count picks
    the same seeds, so an SAE and its matched RandomSAE (seed i controls seed i) are
    resampled together and ``seed_draws(sae) − seed_draws(random) ==
    seed_draws([s − r for s, r in zip(sae, random)])``. One seed: its draws unchanged.

    Parameters
    ----------
    per_seed_draws : list of (n_boot,) arrays, one per seed (all on the same stimulus
        resamples, :func:`resample_counts`).
    n_boot : int, optional; checked against the arrays' length.
    """
    values = np.stack([np.asarray(d, dtype=np.float64).ravel() for d in per_seed_draws]) \
        if len(per_seed_draws) else np.empty((0, 0))
    if values.shape[0] == 0:
        raise fail("align.bootstrap.seed_draws", "no seeds", "one draws array per seed")
    if n_boot is not None and values.shape[1] != int(n_boot):
        raise fail("align.bootstrap.seed_draws", f"draws of length {values.shape[1]}",
                   f"n_boot={n_boot}")
    n_seeds, length = values.shape
    if n_seeds == 1:
        return values[0].copy()
    chosen = seed_choices(n_seeds, length, seed)
    return np.take_along_axis(values.T, chosen, axis=1).mean(axis=1)


def interval(values, ci: float = DEFAULT_CI, estimate: float | None = None) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` of bootstrap draws; NaN without finite draws.

    With ``estimate`` (the observed score) the draws are first shifted so that their mean
    is the estimate: a correlation recomputed on resamples with repeated stimuli is biased
    (towards 0 for weak matches), and an uncorrected percentile interval can then miss its
    own estimate."""
    if not 0 < ci < 1:
        raise fail("align.ci", repr(ci), "a level between 0 and 1, e.g. 0.95")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if estimate is not None and np.isfinite(estimate):
        values = values - values.mean() + estimate
    low, high = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """"gain" when the interval lies above 0, "loss" below, else "no difference"."""
    if low > 0:
        return "gain"
    if high < 0:
        return "loss"
    return "no difference"


def aggregate(draw_arrays) -> np.ndarray:
    """Mean of draws across independent units (sessions, model pairs), index by index.

    Each unit's draws are its own bootstrap distribution of the same quantity; averaging
    them index by index gives draws of the mean over units, so a summary carries an
    interval too (:func:`interval`). All arrays must have the same length.
    """
    arrays = [np.asarray(d, dtype=np.float64).ravel() for d in draw_arrays]
    if not arrays:
        raise fail("align.bootstrap.aggregate", "no draws", "at least one draws array")
    lengths = sorted({a.size for a in arrays})
    if len(lengths) > 1:
        raise fail("align.bootstrap.aggregate", f"draws of lengths {lengths}",
                   "the same n_boot for every unit")
    return np.mean(arrays, axis=0)
