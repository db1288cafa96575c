"""Cross-validation over stimuli, aggregation, and inference for every metric.

:func:`score` is the one entry point the pipeline calls: it validates the inputs, draws
the folds, runs a metric from :data:`METRICS` and returns a JSON-ready dict.

Edge-case policies (the same for every metric):

- NaN or infinite input: SparsealignError naming the array and the first bad rows.
- Too few stimuli: fewer than max(4, 2 · n_folds) is an error (correlations, CKA's
  unbiased estimator and the folds are undefined below that); population metrics that
  need more per fold (debiased CKA: 4, mutual k-NN: k + 2) say so.
- A unit constant on a fit split is dropped for that fold; ``dropped_source`` /
  ``dropped_target`` report the largest count over folds. A unit constant on a test
  split scores r = 0 there. A fold where every unit of one side is constant is an error.
- p ≠ q: every metric accepts it (Hungarian states its normalisation; soft matching uses
  marginals 1/p and 1/q). p > n: ridge switches to its dual (kernel) form, debiased CKA
  stays unbiased, Procrustes fits a semi-orthogonal map.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from sparsealign.align.ceiling import normalise, noise_ceiling
from sparsealign.align.correlation import check_pair
from sparsealign.align_metrics import ALIGNMENT_METRICS
from sparsealign.errors import fail


def _metric(function: str, title: str, per_unit: bool):
    """``module.function`` of :mod:`sparsealign.align`, with its ``title`` and ``per_unit``."""
    module, name = function.split(".")
    fn = getattr(importlib.import_module(f"sparsealign.align.{module}"), name)
    fn.title, fn.per_unit = title, per_unit
    return fn


METRICS: dict = {name: _metric(*row) for name, row in ALIGNMENT_METRICS.items()}
"""Metric name → function ``(source, target, fold_of, **options) -> dict``, with the
attributes ``title`` (axis title in figures) and ``per_unit`` (scores each target unit);
built from :data:`sparsealign.align_metrics.ALIGNMENT_METRICS`, where a metric is added."""

SMALL_WORK = 1e10
"""Below n·(p + q)² multiply-adds, :func:`score` runs with one BLAS thread."""



def has_terms(metric: str) -> bool:
    """Whether a metric returns fold-wise test terms (``keep_terms``) for the bootstrap:
    ridge, semi_matching, soft_matching, hungarian (any metric accepting ``keep_terms``)."""
    return metric in METRICS and "keep_terms" in inspect.signature(METRICS[metric]).parameters

SYMMETRIC = frozenset({"soft_matching", "rsa", "cka", "cka_debiased", "procrustes",
                       "mutual_knn"})


def fold_labels(n: int, n_folds: int, seed: int, groups=None) -> np.ndarray:
    """Test-fold label per stimulus: shuffled with ``seed``, sizes differ by at most one.

    ``groups`` (one id per row) keeps rows with the same id in the same fold, so a
    bootstrap resample never puts copies of one stimulus in both train and test.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        labels = np.empty(n, dtype=np.int64)
        labels[rng.permutation(n)] = np.arange(n) % n_folds
        return labels
    unique, inverse = np.unique(groups, return_inverse=True)
    per_group = np.empty(unique.size, dtype=np.int64)
    per_group[rng.permutation(unique.size)] = np.arange(unique.size) % n_folds
    return per_group[inverse]


def _as_arrays(source, target, options):
    """Arrays from arrays or stores (shared stimuli, matched by id); repeats if any."""
    repeats = options.pop("target_repeats", None)
    if hasattr(source, "data_vars") or hasattr(target, "data_vars"):
        from sparsealign import schema

        if not (hasattr(source, "data_vars") and hasattr(target, "data_vars")):
            raise fail("align", "one input is a store and the other an array",
                       "two stores or two arrays")
        source, target = schema.match_stimuli(source, target, "source", "target",
                                              mode="intersect")
        if target["responses"].ndim == 3 and repeats is None:
            repeats = target["responses"].transpose("stimulus", "unit", "repeat").values
        source, target = schema.responses(source), schema.responses(target)
    return source, target, repeats


def _options_for(metric: str, options: dict) -> dict:
    fn = METRICS[metric]
    accepted = set(inspect.signature(fn).parameters) - {"source", "target", "fold_of"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise fail(f"align.{metric}", f"unknown options {unknown}",
                   f"some of {sorted(accepted)}")
    return options


def _summary(folds, prefix="") -> dict:
    """Mean and SEM (std(ddof=1)/√k) over the folds that have a value."""
    values = np.asarray([v for v in folds if v is not None], dtype=np.float64)
    mean = float(values.mean()) if values.size else None
    sem = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None
    return {f"{prefix}mean": mean, f"{prefix}sem": sem}


def _run(metric, x, y, n_folds, seed, options, groups=None) -> dict:
    fold_of = None if n_folds == 1 else fold_labels(x.shape[0], n_folds, seed, groups)
    return METRICS[metric](x, y, fold_of, **options)


def score(metric: str, source, target, n_folds: int = 5, seed: int = 0, **options) -> dict:
    """Score how well ``source`` aligns with ``target`` (A→B: A explains B).

    Parameters
    ----------
    metric : str
        A key of :data:`METRICS`: "semi_matching", "soft_matching", "hungarian",
        "ridge", "rsa", "cka", "cka_debiased", "procrustes", "mutual_knn".
    source, target : (n, p), (n, q) arrays with rows = the same stimuli, or two stores
        (xarray Datasets, matched on shared stimulus ids; repeats are averaged).
    n_folds : int
        K-fold CV over stimuli, shuffled with ``seed``. Mapping metrics fit on the train
        folds and score on the test fold; metrics without a fitted map (RSA, CKA,
        mutual k-NN) are computed on each test fold. ``n_folds=1``: in-sample, no CV.
    **options
        Passed to the metric: ``memory_budget_mb`` (unit metrics, ridge, procrustes;
        default 1024), ``device`` ("auto",
        "cpu", "cuda[:i]", "torch:<dev>") and ``precision`` (unit metrics and ridge);
        ``normalisation`` (hungarian: "pairs" | "source" | "target");
        ``soft_mode`` ("exact" | "sinkhorn"), ``epsilon``, ``max_iter`` (soft_matching);
        ``alphas`` (ridge); ``rdm`` ("correlation" | "euclidean"), ``compare``
        ("spearman" | "kendall" | "pearson") (rsa); ``k`` (mutual_knn);
        ``max_stimuli`` (rsa, mutual_knn). Handled here for any metric:
        ``reverse=True`` also scores target→source (asymmetric metrics; semi-matching
        always reports it); ``n_boot``, ``ci``: bootstrap interval over stimuli;
        ``n_permutations``: stimulus-permutation null and p-value; ``per_target=True``:
        per-target test r (``per_target``; ridge also ``per_target_r2``) for metrics that
        score target units (semi-matching, ridge), averaged over folds; ``target_repeats``:
        (n, q, repeats) trials of the target for the noise ceiling (taken from a
        target store with a ``repeat`` dim automatically); ``keep_terms=True``: the
        fold-wise test terms under ``terms`` (see Returns).

    Problems smaller than :data:`SMALL_WORK` run with one BLAS thread.

    Returns
    -------
    dict of JSON-ready values: ``metric``, ``mean``, ``sem`` (std(ddof=1)/√n_folds; None
    in-sample), ``folds``, ``n_folds``, ``n_stimuli``, ``n_source``, ``n_target``,
    ``dropped_source`` / ``dropped_target`` (units constant on a fit split, max over
    folds), and metric-specific keys. With ``keep_terms=True`` also ``terms``, the one
    value that is not JSON-ready: a list with one
    :class:`~sparsealign.align.bootstrap.FoldTerms` per fold for the metrics with
    :func:`has_terms` (each fold's score is exactly the weighted sum of its terms'
    test correlations; the input of :func:`sparsealign.align.bootstrap.draws`), None
    for the others.

    Raises
    ------
    SparsealignError
        Unknown metric or option, NaN/inf input, mismatched rows, or too few stimuli
        (fewer than max(4, 2 · n_folds)).
    """
    if metric not in METRICS:
        raise fail("align.metric", repr(metric), f"one of {sorted(METRICS)}")
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise fail("align.n_folds", repr(n_folds), "an integer ≥ 1")
    options = dict(options)
    source, target, repeats = _as_arrays(source, target, options)
    reverse = bool(options.pop("reverse", False))
    n_boot = int(options.pop("n_boot", 0))
    ci = float(options.pop("ci", 0.95))
    n_perm = int(options.pop("n_permutations", 0))
    want_per_target = bool(options.pop("per_target", False))
    keep_terms = bool(options.pop("keep_terms", False))
    x, y = check_pair(source, target, min_rows=max(4, 2 * n_folds))
    options = _options_for(metric, options)
    with _blas_threads_for(x.shape[0] * (x.shape[1] + y.shape[1]) ** 2):
        return _score(metric, x, y, n_folds, seed, options, repeats, reverse, n_boot, ci,
                      n_perm, want_per_target, keep_terms)


def _blas_threads_for(work: float):
    """One BLAS thread for small problems (≲ 1e10 multiply-adds), else leave them be.

    Threaded BLAS only slows products this small, and on a shared CPU its spinning
    threads make a 0.2 s call take seconds; large problems keep the configured threads.
    """
    from contextlib import nullcontext

    if work >= SMALL_WORK:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _score(metric, x, y, n_folds, seed, options, repeats, reverse, n_boot, ci, n_perm,
           want_per_target, keep_terms=False) -> dict:
    with_terms = keep_terms and has_terms(metric)
    raw = _run(metric, x, y, n_folds, seed, {**options, "keep_terms": True} if with_terms
               else options)
    terms = raw.pop("_terms", None)
    per_target = {k[1:]: raw.pop(k) for k in [k for k in raw if k.startswith("_per_target")]}
    out = {"metric": metric, **_summary(raw["folds"]), **raw, "n_folds": int(n_folds),
           "n_stimuli": int(x.shape[0]), "n_source": int(x.shape[1]),
           "n_target": int(y.shape[1]), "seed": int(seed)}
    if reverse and "reverse_folds" not in raw and metric not in SYMMETRIC:
        out["reverse_folds"] = _run(metric, y, x, n_folds, seed, options)["folds"]
    for key in [k for k in out if k.endswith("_folds") and isinstance(out[k], list)]:
        out.update(_summary(out[key], prefix=key[:-len("folds")]))
    if n_boot:
        out.update(bootstrap(metric, x, y, n_boot=n_boot, ci=ci, n_folds=n_folds,
                             seed=seed, **options))
    if n_perm:
        out.update(permutation_null(metric, x, y, n_permutations=n_perm, n_folds=n_folds,
                                    seed=seed, observed=out["mean"], **options))
    if repeats is not None:
        if np.shape(repeats)[:2] != y.shape:
            raise fail("target_repeats", f"shape {np.shape(repeats)}",
                       f"(stimulus, unit, repeat) matching the target's {y.shape}")
        ceiling = noise_ceiling(repeats, seed=seed)
        out["ceiling"] = {k: v for k, v in ceiling.items() if not k.startswith("_")}
        if "per_target" in per_target:
            out["normalised"] = normalise(per_target["per_target"], ceiling["_per_unit"])
    if want_per_target:
        out.update({k: [None if np.isnan(v) else float(v) for v in values]
                    for k, values in per_target.items()})
    if keep_terms:
        out["terms"] = terms
    return out


def bootstrap(metric, source, target, *, n_boot=1000, ci=0.95, n_folds=5, seed=0,
              **options) -> dict:
    """Percentile bootstrap interval of a metric's mean, resampling stimuli.

    Each resample draws n stimuli with replacement and re-runs the whole CV; copies of a
    stimulus share a fold, so none is ever in both train and test.

    Returns ``ci_low``, ``ci_high``, ``ci_level``, ``n_boot``.
    """
    x, y = check_pair(source, target, min_rows=max(4, 2 * n_folds))
    rng = np.random.default_rng([seed, 1])
    values = []
    for _ in range(n_boot):
        rows = np.sort(rng.integers(0, x.shape[0], x.shape[0]))
        if np.unique(rows).size < max(4, 2 * n_folds):
            continue
        values.append(np.mean(_run(metric, x[rows], y[rows], n_folds, seed, options,
                                   groups=rows)["folds"]))
    low, high = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2])
    return {"ci_low": float(low), "ci_high": float(high), "ci_level": ci,
            "n_boot": len(values)}


def permutation_null(metric, source, target, *, n_permutations=1000, n_folds=5, seed=0,
                     observed=None, **options) -> dict:
    """Null distribution of a metric with the target's stimuli shuffled.

    Returns ``null_mean``, ``null_std``, ``null_quantile_95``, ``p_value`` (one-sided,
    (1 + #{null ≥ observed}) / (1 + n_permutations)) and ``n_permutations``.
    """
    x, y = check_pair(source, target, min_rows=max(4, 2 * n_folds))
    if observed is None:
        observed = float(np.mean(_run(metric, x, y, n_folds, seed, options)["folds"]))
    rng = np.random.default_rng([seed, 2])
    null = np.array([np.mean(_run(metric, x, y[rng.permutation(y.shape[0])], n_folds,
                                  seed, options)["folds"]) for _ in range(n_permutations)])
    return {"null_mean": float(null.mean()),
            "null_std": float(null.std(ddof=1)) if null.size > 1 else None,
            "null_quantile_95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + (null >= observed).sum()) / (1 + n_permutations)),
            "n_permutations": int(n_permutations)}
