"""The paper's comparison grid: neurons, SAE latents and random-SAE latents of two systems.

"A→B" means A is the source that explains target B. Each comparison is scored in both
directions on the same folds; the ``both`` row averages the two per fold, so its SEM is
over folds of the direction-averaged score.
"""

from __future__ import annotations

import json

import numpy as np

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


def _score(metric, source, target, kwargs) -> tuple[dict, dict]:
    """``align.score`` plus the per-unit column (JSON list) for metrics that have one."""
    from sparsealign.align import METRICS, score

    # Metrics that score each target unit put their per-unit test scores in the tables.
    result = score(metric, source, target, per_target=METRICS[metric].per_unit, **kwargs)
    extra = {"dropped_source": result.get("dropped_source", 0),
             "dropped_target": result.get("dropped_target", 0)}
    if "per_target" in result:
        extra["per_unit"] = json.dumps([None if v is None else round(v, 4) for v in result["per_target"]])
    return result, extra


def _fold_row(comparison, direction, metric, folds, extra=None) -> dict:
    folds = np.asarray(folds, dtype=float)
    sem = folds.std(ddof=1) / np.sqrt(folds.size) if folds.size > 1 else float("nan")
    row = {"comparison": comparison, "direction": direction, "metric": metric,
           "mean": float(folds.mean()), "sem": float(sem), "n": int(folds.size),
           "folds": json.dumps([round(float(f), 6) for f in folds])}
    row.update(extra or {})
    return row


def score_comparisons(system_a: dict, system_b: dict, metrics, n_folds: int = 5, seed: int = 0,
                      options: dict | None = None, progress=None) -> list[dict]:
    """Score every comparison of :data:`COMPARISONS` between two systems.

    ``system_a``/``system_b`` map ``"neurons"``, ``"sae"``, ``"random"`` to (stimulus,
    unit) arrays whose rows are the same stimuli in the same order. ``progress``, if
    given, is called after each (comparison, metric) with ``(comparison, metric, mean)``.
    """
    options = options or {}
    rows = []
    for comparison, (source, target) in COMPARISONS.items():
        for metric in metrics:
            kwargs = dict(n_folds=n_folds, seed=seed, **options.get(metric, {}))
            ab, ab_extra = _score(metric, system_a[source], system_b[target], kwargs)
            ba, ba_extra = _score(metric, system_b[source], system_a[target], kwargs)
            for direction, result, extra in (("A→B", ab, ab_extra), ("B→A", ba, ba_extra)):
                rows.append(_fold_row(comparison, direction, metric, result["folds"], extra))
            both = (np.asarray(ab["folds"]) + np.asarray(ba["folds"])) / 2
            rows.append(_fold_row(comparison, "both", metric, both))
            if progress is not None:
                progress(comparison, metric, float(both.mean()))
    return rows


def recovery_rows(features: np.ndarray, systems: dict) -> list[dict]:
    """Ground-truth recovery (best correlation per feature, MCC) of each representation.

    ``systems`` maps a system label (``"A"``, ``"B"``) to its representations; the
    ``both`` row averages over systems, with SEM over systems.
    """
    from sparsealign.align import feature_recovery

    rows = []
    for kind, comparison in RECOVERY.items():
        per_system = {label: feature_recovery(features, reps[kind]) for label, reps in systems.items()}
        for metric, key in (("best_corr", "best_corr_mean"), ("mcc", "mcc")):
            values = [result[key] for result in per_system.values()]
            for label, value in zip(per_system, values):
                rows.append(_fold_row(comparison, label, metric, [value]))
            rows.append(_fold_row(comparison, "both", metric, values))
    return rows


def score_against_target(system: dict, target: np.ndarray, target_label: str, metrics,
                         n_folds: int = 5, seed: int = 0, options: dict | None = None,
                         target_repeats=None, progress=None) -> list[dict]:
    """Score neurons, SAE latents and random-SAE latents of one system against a fixed target.

    The target (e.g. V4 neurons) is never re-encoded, so each comparison runs in its one
    ``forward`` direction. With ``target_repeats`` (stimulus × unit × repeat) every row also
    carries the split-half noise ceiling and the ceiling-normalised score, with formulas.
    """
    options = options or {}
    rows = []
    for kind, values in system.items():
        comparison = f"{SOURCE_LABELS[kind]}→{target_label}"
        for metric in metrics:
            kwargs = dict(n_folds=n_folds, seed=seed, **options.get(metric, {}))
            if target_repeats is not None:
                kwargs["target_repeats"] = target_repeats
            result, extra = _score(metric, values, target, kwargs)
            if "ceiling" in result:
                extra.update(ceiling=result["ceiling"]["mean"], ceiling_formula=result["ceiling"]["formula"])
            if result.get("normalised", {}).get("mean") is not None:
                extra.update(normalised=result["normalised"]["mean"],
                             normalised_formula=result["normalised"]["formula"])
            rows.append(_fold_row(comparison, "forward", metric, result["folds"], extra))
            if progress is not None:
                progress(comparison, metric, rows[-1]["mean"])
    return rows
