"""The paper's theory made measurable on the toy models (SCIENCE.md, "The paper's theory").

A toy model h = ReLU(x W), W ∈ R^{n×m} (``state_dict["W"]``: row i = feature i, column j =
neuron j), is fully described by its weights and the feature distribution (n independent
features, each active with probability p, value U[0, 1] when active). So is the
correlation between any two neurons, of one model or of two models shown the same x:

- **Represented features**: feature i is represented when ‖W_i‖ > threshold (default 0.5).
- **Arrangement difference**: semi-matching of the two models' neuron weight vectors
  (columns of W restricted to the features both represent), by *signed* cosine
  similarity. Signed, because the neurons are ReLUs: a neuron and its negation respond
  to disjoint inputs, so a weight vector and its negative are not the same neuron.
- **Predicted Neuron→Neuron correlations**: features are independent with equal
  variance, so the pre-activation correlation of neuron j of A and neuron l of B is
  cos(W^A_{:,j}, W^B_{:,l}). The ReLU changes it; the ReLU-corrected correlation of
  h_A = ReLU(x W_A) and h_B = ReLU(x W_B) is computed here by **Monte Carlo** over the
  feature distribution (a seeded sample drawn with :func:`sparsealign.models.toy.sample_features`,
  the generator the models were trained on), not analytically.
- **Measured**: the in-sample correlation of the two models' stored neuron responses on
  their held-out stimuli, and its in-sample semi-matching. The pipeline's cross-validated
  semi-matching differs from it only by selection noise, tiny at tens of thousands of
  stimuli.

A neuron whose response is constant (dead: every weight ≤ 0, since x ≥ 0) has no
correlation; it is left out of every semi-matching, as the pipeline's metrics drop
constant units, and counted.

Entry points: :func:`theory_table`, :func:`theory_figure` and the stage :func:`run`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from sparsealign.errors import fail

DEFAULT_THRESHOLD = 0.5
"""‖W_i‖ above which feature i counts as represented (SCIENCE.md)."""
DEFAULT_N_SAMPLES = 200_000
"""Monte Carlo feature vectors for the predicted correlations."""
DEFAULT_SEED = 2_000_003
"""Seed of the Monte Carlo stream: disjoint from the training streams (0, 1, 2, …) and the
held-out ones (1_000_003 + data seed) of :mod:`sparsealign.models.toy`."""
AGREEMENT_BAND = 0.05
"""|predicted − measured| semi-matching within which the theory counts as confirmed."""
EXPECTED_REPRESENTED = {8: 18, 16: 33, 32: 57}
"""Rough represented-feature counts of 64 expected at m = 8 / 16 / 32 (SCIENCE.md)."""


# ------------------------------------------------------------------------ weights
def _check_weights(W, name="W") -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or min(W.shape) == 0:
        raise fail(name, f"shape {W.shape}", "a non-empty (n_features, n_hidden) matrix")
    if not np.isfinite(W).all():
        raise fail(name, "non-finite weights", "finite weights")
    return W


def represented(W, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Which features a toy model represents.

    Parameters
    ----------
    W : (n_features, n_hidden) array
        The model's weights as saved (``state_dict["W"]``): row i is feature i.
    threshold : float
        Feature i is represented when ‖W_i‖ (Euclidean norm of row i) > threshold.

    Returns
    -------
    (n_features,) bool array
    """
    W = _check_weights(W)
    if not np.isfinite(threshold) or threshold < 0:
        raise fail("theory.threshold", f"{threshold!r}", "a finite number ≥ 0")
    return np.linalg.norm(W, axis=1) > threshold


def _semi_matching(sim) -> dict:
    """Semi-matching of a (source × target) similarity matrix in both directions.

    Forward (A→B): for each target column, the best (max) entry over source rows;
    averaged over targets. Reverse (B→A): for each source row, the best over target
    columns. Rows / columns that are entirely NaN (dead units) are left out and counted.
    """
    sim = np.asarray(sim, dtype=np.float64)
    rows_ok = np.isfinite(sim).any(axis=1)
    cols_ok = np.isfinite(sim).any(axis=0)
    if not rows_ok.any() or not cols_ok.any():
        raise fail("theory", "every unit of one side is constant (no correlations)",
                   "units that vary")
    sub = sim[np.ix_(rows_ok, cols_ok)]
    sub = np.where(np.isfinite(sub), sub, -np.inf)
    forward = float(sub.max(axis=0).mean())
    reverse = float(sub.max(axis=1).mean())
    return {"forward": forward, "reverse": reverse, "mean": (forward + reverse) / 2,
            "dropped_source": int((~rows_ok).sum()), "dropped_target": int((~cols_ok).sum())}


def cosine_matrix(A, B) -> np.ndarray:
    """Cosine similarity of the columns of A (n × p) with those of B (n × q); NaN for a zero column."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    na, nb = np.linalg.norm(A, axis=0), np.linalg.norm(B, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (A.T @ B) / np.outer(na, nb)
    cos[na == 0, :] = np.nan
    cos[:, nb == 0] = np.nan
    return cos


def arrangement_semi_matching(W_a, W_b, shared) -> dict:
    """Semi-matching of two models' neuron weight vectors on the features both represent.

    Parameters
    ----------
    W_a, W_b : (n_features, m_a) and (n_features, m_b) arrays (rows = features).
    shared : (n_features,) bool array
        The features both models represent (``represented(W_a) & represented(W_b)``).

    Returns
    -------
    dict with ``forward`` (A→B: for each neuron of B the best *signed* cosine over the
    neurons of A, averaged), ``reverse`` (B→A), ``mean`` of the two, ``dropped_*``
    (neurons with no weight on the shared features) and ``n_shared``. Signed, not
    absolute: the neurons are ReLUs, so w and −w are different neurons. 1 means the same
    arrangement up to a permutation (and positive scaling) of the neurons.
    """
    W_a, W_b = _check_weights(W_a, "W_a"), _check_weights(W_b, "W_b")
    shared = np.asarray(shared, dtype=bool)
    if W_a.shape[0] != W_b.shape[0] or shared.shape != (W_a.shape[0],):
        raise fail("theory.arrangement_semi_matching",
                   f"W_a {W_a.shape}, W_b {W_b.shape}, shared {shared.shape}",
                   "the same n_features rows in both and a (n_features,) mask")
    if not shared.any():
        raise fail("theory.arrangement_semi_matching", "no shared represented features",
                   "at least one feature represented by both models")
    out = _semi_matching(cosine_matrix(W_a[shared], W_b[shared]))
    out["n_shared"] = int(shared.sum())
    return out


# ------------------------------------------------------------------ correlations
def correlation_matrix(A, B) -> np.ndarray:
    """Pearson correlation of the columns of A (N × p) with those of B (N × q).

    Float64; NaN for a constant column (its correlation is undefined).
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.shape[0] != B.shape[0] or A.shape[0] < 2:
        raise fail("theory.correlation_matrix", f"{A.shape[0]} vs {B.shape[0]} rows",
                   "the same ≥ 2 rows (stimuli) in both")
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    na, nb = np.sqrt((A * A).sum(axis=0)), np.sqrt((B * B).sum(axis=0))
    # A column is constant when its spread is at rounding level of its values.
    tol_a = 1e-12 * np.maximum(1.0, np.abs(A).max(axis=0)) * np.sqrt(A.shape[0])
    tol_b = 1e-12 * np.maximum(1.0, np.abs(B).max(axis=0)) * np.sqrt(B.shape[0])
    dead_a, dead_b = na <= tol_a, nb <= tol_b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (A.T @ B) / np.outer(na, nb)
    r[dead_a, :] = np.nan
    r[:, dead_b] = np.nan
    return np.clip(r, -1.0, 1.0)


def sample_features(n_samples: int, n_features: int, feature_probability: float,
                    seed: int = DEFAULT_SEED) -> np.ndarray:
    """A seeded sample from the toy feature distribution (:func:`sparsealign.models.toy.sample_features`)."""
    import torch

    from sparsealign.models import toy

    if int(n_samples) < 2:
        raise fail("theory.n_samples", f"{n_samples!r}", "at least 2")
    if not 0 < feature_probability <= 1:
        raise fail("theory.feature_probability", f"{feature_probability!r}", "a number in (0, 1]")
    generator = torch.Generator().manual_seed(int(seed))
    return toy.sample_features(generator, int(n_samples), int(n_features),
                               float(feature_probability)).numpy()


def predicted_correlations(W_a, W_b, features) -> np.ndarray:
    """ReLU-corrected Neuron→Neuron correlations of two toy models, by Monte Carlo.

    Parameters
    ----------
    W_a, W_b : (n_features, m_a), (n_features, m_b) weights.
    features : (N, n_features) array
        A sample of the feature distribution (:func:`sample_features`).

    Returns
    -------
    (m_a, m_b) array: corr(ReLU(x W_a)_j, ReLU(x W_b)_l) over the sample; NaN where a
    neuron is constant on it (dead). Monte Carlo error ≈ (1 − r²)/√N per entry.
    """
    W_a, W_b = _check_weights(W_a, "W_a"), _check_weights(W_b, "W_b")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != W_a.shape[0] or W_b.shape[0] != W_a.shape[0]:
        raise fail("theory.predicted_correlations",
                   f"features {x.shape}, W_a {W_a.shape}, W_b {W_b.shape}",
                   "(N, n_features) features and (n_features, m) weights")
    return correlation_matrix(np.maximum(x @ W_a, 0.0), np.maximum(x @ W_b, 0.0))


def preactivation_correlations(W_a, W_b) -> np.ndarray:
    """The linear (pre-ReLU) prediction: cos(W^A_{:,j}, W^B_{:,l}) over all features.

    Exact for x W because the features are independent with equal variance.
    """
    return cosine_matrix(_check_weights(W_a, "W_a"), _check_weights(W_b, "W_b"))


def predicted_semi_matching(predicted) -> dict:
    """The semi-matching a predicted (m_a × m_b) correlation matrix implies.

    ``forward`` (A→B): for each neuron of B the max predicted correlation over the
    neurons of A, averaged; ``reverse`` (B→A) the same with roles swapped; ``mean``.
    """
    return _semi_matching(predicted)


# ------------------------------------------------------------------------- inputs
def load_toy_weights(path, n_features: int | None = None) -> tuple[np.ndarray, dict]:
    """``(W, config)`` of a toy model saved by the pipeline (``{"state_dict", "n_hidden", "config"}``)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise fail(path, "no such model file", "a toy model saved by sparsealign (.pt)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        W = saved["state_dict"]["W"].detach().cpu().numpy().astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise fail(path, f"not a readable toy model ({type(exc).__name__}: {exc})",
                   'torch.save({"state_dict": …, "n_hidden": …, "config": …})') from None
    n_hidden = saved.get("n_hidden", W.shape[1])
    if W.ndim != 2 or W.shape[1] != n_hidden:
        raise fail(path, f"W has shape {W.shape} for n_hidden = {n_hidden}",
                   "W of shape (n_features, n_hidden)")
    if n_features is not None and W.shape[0] != n_features:
        raise fail(path, f"W has {W.shape[0]} feature rows", f"n_features = {n_features}")
    return _check_weights(W, str(path)), dict(saved.get("config") or {})


def _load_responses(path_a, path_b):
    from sparsealign import schema

    a, b = schema.open_store(path_a), schema.open_store(path_b)
    a, b = schema.match_stimuli(a, b, str(path_a), str(path_b), mode="equal")
    return schema.responses(a), schema.responses(b)


# -------------------------------------------------------------------------- table
def pair_theory(W_a, W_b, responses_a, responses_b, features, threshold=DEFAULT_THRESHOLD) -> dict:
    """Every theory quantity of one model pair, with its matrices.

    Parameters
    ----------
    W_a, W_b : weights (rows = features). responses_a, responses_b : (n_stimuli, m)
        the two models' measured neuron responses to the same held-out stimuli.
    features : (N, n_features) Monte Carlo sample of the feature distribution.

    Returns
    -------
    dict of scalars (see :func:`theory_table`) plus ``predicted``, ``measured`` and
    ``preactivation`` (m_a × m_b) matrices.
    """
    W_a, W_b = _check_weights(W_a, "W_a"), _check_weights(W_b, "W_b")
    ra, rb = np.asarray(responses_a), np.asarray(responses_b)
    if ra.ndim != 2 or rb.ndim != 2 or ra.shape[1] != W_a.shape[1] or rb.shape[1] != W_b.shape[1]:
        raise fail("theory.pair_theory", f"responses {ra.shape} / {rb.shape} for W "
                   f"{W_a.shape} / {W_b.shape}", "one response column per neuron")
    rep_a, rep_b = represented(W_a, threshold), represented(W_b, threshold)
    shared = rep_a & rep_b
    arrangement = (arrangement_semi_matching(W_a, W_b, shared) if shared.any()
                   else {"forward": np.nan, "reverse": np.nan, "mean": np.nan})
    predicted = predicted_correlations(W_a, W_b, features)
    measured = correlation_matrix(ra, rb)
    pre = preactivation_correlations(W_a, W_b)
    pred_sm, meas_sm, pre_sm = (_semi_matching(predicted), _semi_matching(measured),
                                _semi_matching(pre))
    both = np.isfinite(predicted) & np.isfinite(measured)
    both_pre = np.isfinite(pre) & np.isfinite(measured)
    diff = np.abs(predicted - measured)[both]
    return {
        "n_represented_a": int(rep_a.sum()), "n_represented_b": int(rep_b.sum()),
        "n_shared": int(shared.sum()),
        "arrangement_semi_matching": arrangement["mean"],
        "arrangement_forward": arrangement["forward"], "arrangement_reverse": arrangement["reverse"],
        "preactivation_semi_matching": pre_sm["mean"],
        "predicted_semi_matching": pred_sm["mean"],
        "predicted_forward": pred_sm["forward"], "predicted_reverse": pred_sm["reverse"],
        "measured_semi_matching": meas_sm["mean"],
        "measured_forward": meas_sm["forward"], "measured_reverse": meas_sm["reverse"],
        "semi_matching_difference": pred_sm["mean"] - meas_sm["mean"],
        "predicted_vs_measured_r": _pearson(predicted[both], measured[both]),
        "preactivation_vs_measured_r": _pearson(pre[both_pre], measured[both_pre]),
        "max_abs_correlation_difference": float(diff.max()) if diff.size else np.nan,
        "dead_a": int((~np.isfinite(measured).any(axis=1)).sum()),
        "dead_b": int((~np.isfinite(measured).any(axis=0)).sum()),
        "n_stimuli": int(ra.shape[0]),
        "predicted": predicted, "measured": measured, "preactivation": pre,
    }


def _pearson(x, y) -> float:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


MATRIX_KEYS = ("predicted", "measured", "preactivation")


def method_string(n_samples: int) -> str:
    return f"monte-carlo ReLU, {int(n_samples)} samples"


def theory_table(pairs, n_features: int, feature_probability: float, *,
                 threshold: float = DEFAULT_THRESHOLD, n_samples: int = DEFAULT_N_SAMPLES,
                 seed: int = DEFAULT_SEED, return_matrices: bool = False):
    """One row of theory quantities per model pair.

    Parameters
    ----------
    pairs : list of dict
        Each with ``hidden``, ``pair``, ``seed_a``, ``seed_b``, ``model_a``, ``model_b``
        (toy model files) and ``activations_a``, ``activations_b`` (their neuron stores).
    n_features, feature_probability : the feature distribution the models were trained on
        (checked against each model's saved config where it records them).
    threshold : represented-feature threshold on ‖W_i‖.
    n_samples, seed : the Monte Carlo sample (one sample shared by every pair).
    return_matrices : also return a list of ``{"hidden", "pair", "predicted",
        "measured", "preactivation"}`` dicts (for :func:`theory_figure`).

    Returns
    -------
    pandas.DataFrame with hidden, pair, seed_a, seed_b, n_represented_a/_b, n_shared,
    arrangement_semi_matching (signed-cosine, mean of both directions; _forward/_reverse),
    preactivation_semi_matching (the linear cosine prediction), predicted_semi_matching
    (ReLU-corrected Monte Carlo; _forward/_reverse), measured_semi_matching (in-sample on
    the stored responses; _forward/_reverse), semi_matching_difference (predicted −
    measured), predicted_vs_measured_r and preactivation_vs_measured_r (Pearson r over
    the matrix entries), max_abs_correlation_difference, dead_a/_b, n_stimuli,
    within_band (|difference| ≤ 0.05), threshold and method. ``(table, matrices)`` when
    ``return_matrices``.
    """
    import pandas as pd

    if not pairs:
        raise fail("theory.pairs", "no model pairs", "at least one pair")
    features = sample_features(n_samples, n_features, feature_probability, seed)
    rows, matrices = [], []
    for item in pairs:
        missing = [k for k in ("hidden", "pair", "model_a", "model_b", "activations_a",
                               "activations_b") if k not in item]
        if missing:
            raise fail("theory.pairs", f"a pair lacks {missing}", "hidden, pair, model_a/_b, "
                       "activations_a/_b")
        W_a, cfg_a = load_toy_weights(item["model_a"], n_features)
        W_b, cfg_b = load_toy_weights(item["model_b"], n_features)
        for path, cfg in ((item["model_a"], cfg_a), (item["model_b"], cfg_b)):
            p = cfg.get("feature_probability")
            if p is not None and not np.isclose(float(p), feature_probability):
                raise fail(path, f"trained with feature_probability {p}",
                           f"{feature_probability} (the distribution the theory assumes)")
        resp_a, resp_b = _load_responses(item["activations_a"], item["activations_b"])
        result = pair_theory(W_a, W_b, resp_a, resp_b, features, threshold)
        row = {"hidden": int(item["hidden"]), "pair": item["pair"],
               "seed_a": item.get("seed_a"), "seed_b": item.get("seed_b")}
        row.update({k: v for k, v in result.items() if k not in MATRIX_KEYS})
        row["within_band"] = bool(abs(row["semi_matching_difference"]) <= AGREEMENT_BAND)
        row["threshold"] = float(threshold)
        row["method"] = method_string(n_samples)
        rows.append(row)
        matrices.append({"hidden": row["hidden"], "pair": row["pair"],
                         **{k: result[k] for k in MATRIX_KEYS}})
    table = pd.DataFrame(rows)
    return (table, matrices) if return_matrices else table


# ------------------------------------------------------------------------- figure
def _hidden_colours(hiddens):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    hs = sorted(set(hiddens))
    return {h: cmap(0.1 + 0.75 * i / max(1, len(hs) - 1)) for i, h in enumerate(hs)}


def theory_figure(table, matrices, out_png, title: str = "") -> None:
    """Predicted vs measured Neuron→Neuron correlations and semi-matching; represented features.

    Panels, left to right: one scatter per hidden size m of the predicted (ReLU, Monte
    Carlo) against the measured correlation of every neuron pair of every seed pair
    (the linear pre-activation cosine in grey behind, identity line); the predicted
    against measured semi-matching per pair (identity line, ±0.05 band); represented
    features per model against m (with the expected counts). Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsealign.atomic import atomic_path

    if len(table) == 0:
        raise fail("theory.theory_figure", "an empty table", "at least one model pair")
    hiddens = sorted({int(h) for h in table["hidden"]})
    colours = _hidden_colours(hiddens)
    n_panels = len(hiddens) + 2
    fig, axes = plt.subplots(1, n_panels, figsize=(2.9 * n_panels + 0.4, 3.0), squeeze=False)
    axes = axes[0]
    for ax, h in zip(axes, hiddens):
        mats = [m for m in matrices if int(m["hidden"]) == h]
        meas = np.concatenate([m["measured"].ravel() for m in mats]) if mats else np.array([])
        pred = np.concatenate([m["predicted"].ravel() for m in mats]) if mats else np.array([])
        pre = np.array([])
        if mats and all("preactivation" in m for m in mats):
            pre = np.concatenate([m["preactivation"].ravel() for m in mats])
            ax.scatter(meas, pre, s=3, color="#c7c7c7", alpha=0.6, linewidths=0,
                       label="pre-ReLU cosine")
        ax.scatter(meas, pred, s=4, color=colours[h], alpha=0.7, linewidths=0,
                   label="ReLU, Monte Carlo")
        values = np.concatenate([meas, pred, pre])
        values = values[np.isfinite(values)]
        lo, hi = ((float(values.min()) - 0.05, float(values.max()) + 0.05) if values.size
                  else (-1.0, 1.0))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.6)
        rows = table[table["hidden"] == h]
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"hidden = {h}: neuron pairs", fontsize=9)
        ax.set_xlabel("measured r", fontsize=8)
        ax.set_ylabel("predicted r", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.text(0.03, 0.97, f"r = {rows['predicted_vs_measured_r'].mean():.4f}\n"
                f"{len(rows)} pair{'s' if len(rows) != 1 else ''}",
                transform=ax.transAxes, va="top", fontsize=7)
        ax.legend(fontsize=6, loc="lower right", markerscale=2)
    ax = axes[len(hiddens)]
    lo = float(np.nanmin(table[["predicted_semi_matching", "measured_semi_matching",
                                 "preactivation_semi_matching"]].values)) - 0.08
    hi = float(np.nanmax(table[["predicted_semi_matching", "measured_semi_matching",
                                 "preactivation_semi_matching"]].values)) + 0.08
    grid = np.array([lo, hi])
    ax.fill_between(grid, grid - AGREEMENT_BAND, grid + AGREEMENT_BAND, color="#eeeeee",
                    label="±0.05")
    ax.plot(grid, grid, color="black", linewidth=0.6)
    for h in hiddens:
        rows = table[table["hidden"] == h]
        ax.scatter(rows["measured_semi_matching"], rows["predicted_semi_matching"], s=22,
                   color=colours[h], edgecolors="black", linewidths=0.4, label=f"m = {h}")
        ax.scatter(rows["measured_semi_matching"], rows["preactivation_semi_matching"], s=14,
                   marker="x", color=colours[h], linewidths=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title("Semi-matching per pair (× pre-ReLU)", fontsize=9)
    ax.set_xlabel("measured (in-sample)", fontsize=8)
    ax.set_ylabel("predicted", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left")
    ax = axes[len(hiddens) + 1]
    for h in hiddens:
        rows = table[table["hidden"] == h]
        counts = np.concatenate([rows["n_represented_a"], rows["n_represented_b"]])
        jitter = np.linspace(-0.06, 0.06, counts.size) * h
        ax.scatter(h + jitter, counts, s=14, color=colours[h], edgecolors="black",
                   linewidths=0.3)
        ax.scatter([h], [rows["n_shared"].mean()], marker="_", s=120, color="black",
                   label="shared (mean)" if h == hiddens[0] else None)
    known = {h: c for h, c in EXPECTED_REPRESENTED.items()}
    ax.plot(list(known), list(known.values()), linestyle="--", marker="o", markersize=3,
            color="#7f7f7f", linewidth=0.8, label="expected (SCIENCE.md)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(hiddens) | set(known)),
                  [str(h) for h in sorted(set(hiddens) | set(known))])
    ax.set_title("Represented features (‖W_i‖ > "
                 f"{float(table['threshold'].iloc[0]):g})", fontsize=9)
    ax.set_xlabel("hidden size m", fontsize=8)
    ax.set_ylabel("represented features", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title or f"Toy-model theory: {table['method'].iloc[0]}", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# -------------------------------------------------------------------------- stage
def group_pairs(models, activations, labels) -> list[dict]:
    """Model pairs from parallel lists of members; two members per (hidden, pair), A = lower seed."""
    if not (len(models) == len(activations) == len(labels)):
        raise fail("theory.run", f"{len(models)} models, {len(activations)} activation stores, "
                   f"{len(labels)} labels", "one model, store and label per member")
    groups = defaultdict(list)
    for model, store, label in zip(models, activations, labels):
        missing = [k for k in ("hidden", "pair", "seed") if k not in label]
        if missing:
            raise fail("theory.run", f"label {label} lacks {missing}", "hidden, pair and seed")
        groups[(int(label["hidden"]), label["pair"])].append((int(label["seed"]), model, store))
    pairs = []
    for (hidden, pair), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if len(members) != 2:
            raise fail("theory.run", f"hidden {hidden} pair {pair} has {len(members)} members "
                       f"(seeds {[m[0] for m in members]})", "exactly two seeds per pair")
        (sa, ma, aa), (sb, mb, ab) = sorted(members, key=lambda m: m[0])
        pairs.append({"hidden": hidden, "pair": pair, "seed_a": sa, "seed_b": sb,
                      "model_a": ma, "model_b": mb, "activations_a": aa, "activations_b": ab})
    return pairs


def run(models: list, activations: list, labels: list, params: dict, table_out, figure_out):
    """Stage entry point: the theory table (CSV) and figure (PNG) of every toy model pair.

    Parameters
    ----------
    models, activations : parallel lists of toy model files (.pt) and their neuron stores.
    labels : parallel list of dicts with ``hidden``, ``pair`` and ``seed``; members with the
        same (hidden, pair) form one pair (lower seed = A).
    params : ``n_features``, ``feature_probability`` (required); ``threshold`` (0.5),
        ``n_samples`` (200,000) and ``seed`` (:data:`DEFAULT_SEED`) of the Monte Carlo.
    table_out, figure_out : output paths, both written atomically.

    Returns
    -------
    The table (pandas.DataFrame).
    """
    from sparsealign.atomic import atomic_path

    missing = [k for k in ("n_features", "feature_probability") if k not in params]
    if missing:
        raise fail("theory.params", f"missing {missing}", "n_features and feature_probability")
    pairs = group_pairs(models, activations, labels)
    table, matrices = theory_table(
        pairs, int(params["n_features"]), float(params["feature_probability"]),
        threshold=float(params.get("threshold", DEFAULT_THRESHOLD)),
        n_samples=int(params.get("n_samples", DEFAULT_N_SAMPLES)),
        seed=int(params.get("seed", DEFAULT_SEED)), return_matrices=True)
    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    theory_figure(table, matrices, figure_out)
    return table
