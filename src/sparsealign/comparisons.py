"""The paper's comparison grid: neurons, SAE latents and random-SAE latents of two systems.

"A→B" means A is the source that explains target B. Each comparison is scored in both
directions on the same folds; the ``both`` row averages the two per fold, so its SEM is
over folds of the direction-averaged score.

SAE seeds: "sae" and "random" may each be one array or a list of arrays, one per SAE
training seed (random seed i is the control of SAE seed i; in pairs, seed i of system A
meets seed i of system B). A row's folds are then averaged over seeds, fold by fold.

Paired intervals ("a gain is a paired difference with an interval", SCIENCE.md): with
``n_boot`` > 0, every row of a metric with test terms (ridge, semi-, soft- and one-to-one
matching) carries ``ci_low`` / ``ci_high`` from the fast test-set bootstrap of
:mod:`sparsealign.align.bootstrap` — one set of stimulus resamples shared by every
representation and comparison of the call, plus a resampling of the SAE seeds (the same
seed indices for an SAE and its RandomSAE control) — and :data:`CONTRASTS` /
:data:`TARGET_CONTRASTS` add rows for the paired differences with a ``verdict`` and their
``draws``. The mappings are fitted once per fold; the interval covers the sampling of the
test stimuli and of the SAE seeds, not refit variance.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from sparsealign.errors import fail

# comparison name → (source representation, target representation)
COMPARISONS = {
    "Neuron→Neuron": ("neurons", "neurons"),
    "SAE→Neuron": ("sae", "neurons"),
    "SAE→SAE": ("sae", "sae"),
    "RandomSAE→Neuron": ("random", "neurons"),
    "RandomSAE→SAE": ("random", "sae"),
}
SOURCE_LABELS = {"neurons": "Neuron", "sae": "SAE", "random": "RandomSAE"}
RECOVERY = {"neurons": "GroundTruth→Neuron", "sae": "GroundTruth→SAE",
            "random": "GroundTruth→RandomSAE"}

CONTRASTS = {
    "SAE→SAE − Neuron→Neuron": ("SAE→SAE", "Neuron→Neuron"),
    "SAE→Neuron − Neuron→Neuron": ("SAE→Neuron", "Neuron→Neuron"),
    "SAE→Neuron − RandomSAE→Neuron": ("SAE→Neuron", "RandomSAE→Neuron"),
    "SAE→SAE − RandomSAE→SAE": ("SAE→SAE", "RandomSAE→SAE"),
}
"""Paired differences between two systems: contrast → (minuend, subtrahend) of
:data:`COMPARISONS`, on the direction-averaged (``both``) score."""

TARGET_CONTRASTS = {
    "SAE→{target} − Neuron→{target}": ("sae", "neurons"),
    "SAE→{target} − RandomSAE→{target}": ("sae", "random"),
}
"""Paired differences against a fixed target (``forward``): contrast name template
(``{target}`` is the target label, e.g. "SAE→V4 − Neuron→V4") → (minuend, subtrahend)
representations."""

SEEDED = ("sae", "random")


def _seeds(system: dict, label: str) -> dict:
    """Each representation as a list of arrays (one per SAE seed; neurons: one)."""
    out = {}
    for kind, value in system.items():
        if isinstance(value, (list, tuple)):
            if kind not in SEEDED:
                raise fail(f"{label}.{kind}", f"a list of {len(value)} arrays",
                           "one array (only 'sae' and 'random' take one array per seed)")
            if not value:
                raise fail(f"{label}.{kind}", "an empty list", "one array per SAE seed")
            out[kind] = list(value)
        else:
            out[kind] = [value]
    return out


def _n_seeds(*systems) -> int:
    """The common number of SAE seeds; a single array stands for every seed."""
    counts = {len(v) for system in systems for kind, v in system.items() if kind in SEEDED}
    counts.discard(1)
    if len(counts) > 1:
        raise fail("comparisons", f"SAE seed lists of lengths {sorted(counts)}",
                   "the same number of seeds for 'sae' and 'random' in every system")
    return counts.pop() if counts else 1


class _Scored:
    """One (comparison, direction, metric) scored on each seed: fold scores averaged
    over seeds fold by fold, the row's extra columns, and per-seed bootstrap draws."""

    def __init__(self, metric, sources, targets, kwargs, counts):
        from sparsealign.align import METRICS, score
        from sparsealign.align.bootstrap import draws
        from sparsealign.align.crossval import has_terms

        boot = counts is not None and has_terms(metric)
        results, self.draws = [], [] if boot else None
        self.n_seeds = max(len(sources), len(targets))
        for i in range(self.n_seeds):
            result = score(metric, sources[i % len(sources)], targets[i % len(targets)],
                           per_target=METRICS[metric].per_unit, keep_terms=boot, **kwargs)
            if boot:  # the terms are large: keep only their draws
                self.draws.append(draws(result.pop("terms"), counts))
            results.append(result)
        self.folds = np.mean([np.asarray(r["folds"], dtype=float) for r in results], axis=0)
        self.extra = {"dropped_source": max(r.get("dropped_source", 0) for r in results),
                      "dropped_target": max(r.get("dropped_target", 0) for r in results)}
        if "per_target" in results[0]:
            values = np.array([[np.nan if v is None else v for v in r["per_target"]]
                               for r in results], dtype=float)
            with warnings.catch_warnings():  # a unit never scored stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(values, axis=0)
            self.extra["per_unit"] = json.dumps([None if np.isnan(v) else round(float(v), 4)
                                                 for v in mean])
        if "ceiling" in results[0]:
            self.extra.update(ceiling=results[0]["ceiling"]["mean"],
                              ceiling_formula=results[0]["ceiling"]["formula"])
        normalised = [r.get("normalised", {}).get("mean") for r in results]
        if all(v is not None for v in normalised) and "normalised" in results[0]:
            self.extra.update(normalised=float(np.mean(normalised)),
                              normalised_formula=results[0]["normalised"]["formula"])


def _interval_columns(per_seed_draws, n_boot: int, ci: float, seed: int, n_seeds: int,
                      estimate: float, contrast: bool = False, keep_draws: bool = False) -> dict:
    """``ci_low``, ``ci_high`` and ``n_seeds`` of a row (NaN without draws); for a
    contrast also ``verdict``; for a contrast or with ``keep_draws`` (the rows a summary
    aggregates over sessions or pairs) ``draws`` (JSON, 5 decimals). The interval is
    centred on ``estimate``, the row's score (see :func:`~sparsealign.align.bootstrap.interval`)."""
    from sparsealign.align.bootstrap import interval, seed_draws, verdict

    if per_seed_draws is None:
        return {"ci_low": float("nan"), "ci_high": float("nan"), "n_seeds": n_seeds}
    values = seed_draws(per_seed_draws, n_boot, seed)
    low, high = interval(values, ci, estimate)
    out = {"ci_low": low, "ci_high": high, "ci_level": ci, "n_seeds": n_seeds}
    if contrast:
        out["verdict"] = verdict(low, high)
    if contrast or keep_draws:
        out["draws"] = json.dumps([round(float(v), 5) for v in values])
    return out


def _per_seed(combine, first, second):
    """``combine`` seed by seed; a one-seed side (e.g. neurons) meets every seed."""
    if first is None or second is None:
        return None
    n = max(len(first), len(second))
    return [combine(first[i % len(first)], second[i % len(second)]) for i in range(n)]


def _difference(minuend, subtrahend):
    """Per-seed differences of draws."""
    return _per_seed(np.subtract, minuend, subtrahend)


def _counts(n_stimuli: int, n_boot: int, ci: float, seed: int):
    from sparsealign.align.bootstrap import interval, resample_counts

    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise fail("alignment.n_boot", repr(n_boot), "an integer ≥ 0 (0: no intervals)")
    if not n_boot:
        return None
    interval([0.0], ci)  # validates ci
    return resample_counts(n_stimuli, int(n_boot), seed)


def _fold_row(comparison, direction, metric, folds, extra=None) -> dict:
    folds = np.asarray(folds, dtype=float)
    sem = folds.std(ddof=1) / np.sqrt(folds.size) if folds.size > 1 else float("nan")
    row = {"comparison": comparison, "direction": direction, "metric": metric,
           "mean": float(folds.mean()), "sem": float(sem), "n": int(folds.size),
           "folds": json.dumps([round(float(f), 6) for f in folds])}
    row.update(extra or {})
    return row


def score_comparisons(system_a: dict, system_b: dict, metrics, n_folds: int = 5, seed: int = 0,
                      options: dict | None = None, progress=None, n_boot: int = 0,
                      ci: float = 0.95) -> list[dict]:
    """Score every comparison of :data:`COMPARISONS` between two systems.

    Parameters
    ----------
    system_a, system_b : dict
        ``"neurons"`` → one (stimulus, unit) array; ``"sae"``, ``"random"`` → one array or
        a list of arrays, one per SAE seed (random seed i controls SAE seed i; seed i of A
        meets seed i of B; a single array stands for every seed). Rows are the same
        stimuli in the same order everywhere.
    metrics : list of metric names; n_folds, seed : CV folds (and bootstrap seed).
    options : per-metric options for :func:`sparsealign.align.score`.
    progress : called after each (comparison, metric) with ``(comparison, metric, mean)``.
    n_boot : int
        Stimulus (and seed) resamples of the paired test-set bootstrap; 0 (default)
        disables intervals and contrast rows.
    ci : float
        Interval level (percentile bootstrap), e.g. 0.95.

    Returns
    -------
    list of row dicts: ``comparison``, ``direction`` ("A→B", "B→A", "both"), ``metric``,
    ``mean``, ``sem``, ``n``, ``folds`` (JSON; seed-averaged fold by fold),
    ``dropped_source``, ``dropped_target``, ``per_unit`` (per-unit metrics). With
    ``n_boot``: ``ci_low``, ``ci_high`` (NaN for metrics without test terms), ``n_seeds``,
    and one ``both`` row per :data:`CONTRASTS` entry and metric with test terms: ``mean``
    (observed difference; ``folds`` its fold-wise differences), ``ci_low``, ``ci_high``,
    ``verdict`` ("gain" | "loss" | "no difference") and ``draws`` (JSON list of the
    ``n_boot`` bootstrap differences, 5 decimals; combine units with
    :func:`sparsealign.align.bootstrap.aggregate`).
    """
    options = options or {}
    a, b = _seeds(system_a, "system_a"), _seeds(system_b, "system_b")
    _n_seeds(a, b)
    counts = _counts(np.shape(a["neurons"][0])[0] if "neurons" in a else
                     np.shape(next(iter(a.values()))[0])[0], n_boot, ci, seed)
    rows, both = [], {}
    for comparison, (source, target) in COMPARISONS.items():
        for metric in metrics:
            kwargs = dict(n_folds=n_folds, seed=seed, **options.get(metric, {}))
            ab = _Scored(metric, a[source], b[target], kwargs, counts)
            ba = _Scored(metric, b[source], a[target], kwargs, counts)
            per_seed = _per_seed(lambda x, y: (x + y) / 2, ab.draws, ba.draws)
            folds = (ab.folds + ba.folds) / 2
            both[comparison, metric] = (folds, per_seed)
            for direction, scored, extra in (("A→B", ab, ab.extra), ("B→A", ba, ba.extra),
                                             ("both", None, {})):
                draws_here = per_seed if scored is None else scored.draws
                n_seeds = max(ab.n_seeds, ba.n_seeds) if scored is None else scored.n_seeds
                row_folds = folds if scored is None else scored.folds
                if counts is not None:
                    extra = {**extra, **_interval_columns(
                        draws_here, n_boot, ci, seed, n_seeds, float(np.mean(row_folds)),
                        keep_draws=scored is None)}
                rows.append(_fold_row(comparison, direction, metric, row_folds, extra))
            if progress is not None:
                progress(comparison, metric, float(folds.mean()))
    if counts is not None:
        for metric in metrics:
            for contrast, (plus, minus) in CONTRASTS.items():
                (f_plus, d_plus), (f_minus, d_minus) = both[plus, metric], both[minus, metric]
                diff = _difference(d_plus, d_minus)
                if diff is None:
                    continue
                rows.append(_fold_row(contrast, "both", metric, f_plus - f_minus,
                                      _interval_columns(diff, n_boot, ci, seed, len(diff),
                                                        float(np.mean(f_plus - f_minus)),
                                                        contrast=True)))
    return rows


def recovery_rows(features: np.ndarray, systems: dict) -> list[dict]:
    """Ground-truth recovery (best correlation per feature, MCC) of each representation.

    ``systems`` maps a system label (``"A"``, ``"B"``) to its representations ("sae" and
    "random" may be lists, one array per SAE seed: values are averaged over seeds); the
    ``both`` row averages over systems, with SEM over systems.
    """
    from sparsealign.align import feature_recovery

    rows = []
    systems = {label: _seeds(reps, label) for label, reps in systems.items()}
    for kind, comparison in RECOVERY.items():
        per_system = {label: [feature_recovery(features, v) for v in reps[kind]]
                      for label, reps in systems.items()}
        for metric, key in (("best_corr", "best_corr_mean"), ("mcc", "mcc")):
            values = [float(np.mean([r[key] for r in results]))
                      for results in per_system.values()]
            for label, value in zip(per_system, values):
                rows.append(_fold_row(comparison, label, metric, [value]))
            rows.append(_fold_row(comparison, "both", metric, values))
    return rows


def score_against_target(system: dict, target: np.ndarray, target_label: str, metrics,
                         n_folds: int = 5, seed: int = 0, options: dict | None = None,
                         target_repeats=None, progress=None, n_boot: int = 0,
                         ci: float = 0.95) -> list[dict]:
    """Score neurons, SAE latents and random-SAE latents of one system against a fixed target.

    The target (e.g. V4 neurons) is never re-encoded, so each comparison runs in its one
    ``forward`` direction. With ``target_repeats`` (stimulus × unit × repeat) every row also
    carries the split-half noise ceiling and the ceiling-normalised score, with formulas.

    ``system`` maps ``"neurons"`` to one array and ``"sae"`` / ``"random"`` to one array
    or a list of arrays, one per SAE seed (random seed i controls SAE seed i); a row's
    folds (and normalised score) are then averaged over seeds. ``n_boot`` > 0 adds
    ``ci_low``, ``ci_high``, ``n_seeds`` to every row (NaN intervals for metrics without
    test terms) and, for metrics with test terms, one ``forward`` row per
    :data:`TARGET_CONTRASTS` entry (e.g. "SAE→V4 − Neuron→V4") with ``mean`` (observed
    difference), ``ci_low``, ``ci_high``, ``verdict`` and ``draws`` (JSON); see
    :func:`score_comparisons`.
    """
    options = options or {}
    reps = _seeds(system, "system")
    _n_seeds(reps)
    counts = _counts(np.shape(target)[0], n_boot, ci, seed)
    rows, scored = [], {}
    for kind, values in reps.items():
        comparison = f"{SOURCE_LABELS[kind]}→{target_label}"
        for metric in metrics:
            kwargs = dict(n_folds=n_folds, seed=seed, **options.get(metric, {}))
            if target_repeats is not None:
                kwargs["target_repeats"] = target_repeats
            result = scored[kind, metric] = _Scored(metric, values, [target], kwargs, counts)
            extra = dict(result.extra)
            if counts is not None:
                extra.update(_interval_columns(result.draws, n_boot, ci, seed, result.n_seeds,
                                               float(np.mean(result.folds)), keep_draws=True))
            rows.append(_fold_row(comparison, "forward", metric, result.folds, extra))
            if progress is not None:
                progress(comparison, metric, rows[-1]["mean"])
    if counts is not None:
        for metric in metrics:
            for template, (plus, minus) in TARGET_CONTRASTS.items():
                if (plus, metric) not in scored or (minus, metric) not in scored:
                    continue
                high, low = scored[plus, metric], scored[minus, metric]
                diff = _difference(high.draws, low.draws)
                if diff is None:
                    continue
                rows.append(_fold_row(template.format(target=target_label), "forward", metric,
                                      high.folds - low.folds,
                                      _interval_columns(diff, n_boot, ci, seed, len(diff),
                                                        float(np.mean(high.folds - low.folds)),
                                                        contrast=True)))
    return rows
