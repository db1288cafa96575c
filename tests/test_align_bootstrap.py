"""Fast paired test-set bootstrap: test terms, resamples, seed level, intervals, contrasts."""

import json
import time

import numpy as np
import pandas as pd
import pytest

from sparsealign import comparisons
from sparsealign.align import score
from sparsealign.align.bootstrap import (FoldTerms, aggregate, draws, interval,
                                         resample_counts, seed_draws, verdict)
from sparsealign.align.crossval import has_terms
from sparsealign.errors import SparsealignError

TERM_METRICS = [("ridge", {}), ("ridge", {"alphas": [1e-3, 1.0, 1e3]}),
                ("semi_matching", {}), ("hungarian", {}),
                ("hungarian", {"normalisation": "source"}),
                ("hungarian", {"normalisation": "target"}), ("soft_matching", {}),
                ("soft_matching", {"soft_mode": "sinkhorn"})]


def _awkward_pair(rng, n=150, p=13, q=9):
    """Correlated units plus the edge cases: a unit constant everywhere (dropped), and
    units that vary on one fold only (constant on the other test splits, r = 0 there)."""
    x = rng.standard_normal((n, p))
    y = x[:, :q] @ rng.standard_normal((q, q)) * 0.5 + rng.standard_normal((n, q))
    x[:, 4] = 2.0
    y[:, 1] = 0.0
    from sparsealign.align import fold_labels
    folds = fold_labels(n, 5, seed=0)
    x[:, 5] = np.where(folds == 2, rng.standard_normal(n), 0.0)
    y[:, 6] = np.where(folds == 3, rng.standard_normal(n), 1.0)
    return x, y


@pytest.mark.parametrize("metric,options", TERM_METRICS)
def test_terms_reproduce_every_fold_score(metric, options):
    x, y = _awkward_pair(np.random.default_rng(0))
    result = score(metric, x, y, keep_terms=True, **options)
    assert result["dropped_source"] >= 1 and result["dropped_target"] >= 1
    terms = result["terms"]
    assert len(terms) == 5 and all(isinstance(t, FoldTerms) for t in terms)
    # the folds' test rows partition the stimuli
    assert np.array_equal(np.sort(np.concatenate([t.rows for t in terms])), np.arange(150))
    np.testing.assert_allclose([t.score() for t in terms], result["folds"], atol=1e-10, rtol=0)
    identity = np.ones((1, 150), dtype=np.int64)
    assert draws(terms, identity)[0] == pytest.approx(result["mean"], abs=1e-10)
    assert "terms" not in score(metric, x, y, **options)  # only on request


def test_terms_hold_for_p_not_dividing_q_and_the_dual_ridge():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 7)), rng.standard_normal((40, 5))
    y[:, :3] += x[:, :3]
    for metric in ("soft_matching", "hungarian"):  # network simplex; unmatched units
        result = score(metric, x, y, keep_terms=True)
        np.testing.assert_allclose([t.score() for t in result["terms"]], result["folds"],
                                   atol=1e-10, rtol=0)
    wide = np.hstack([x, rng.standard_normal((40, 60))])  # p > n_train: the dual form
    result = score("ridge", wide, y, keep_terms=True)
    np.testing.assert_allclose([t.score() for t in result["terms"]], result["folds"],
                               atol=1e-10, rtol=0)


def test_metrics_without_terms_say_so():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((60, 4)), rng.standard_normal((60, 4))
    assert score("cka", x, y, keep_terms=True)["terms"] is None
    assert {m for m in ("ridge", "semi_matching", "soft_matching", "hungarian", "rsa", "cka")
            if has_terms(m)} == {"ridge", "semi_matching", "soft_matching", "hungarian"}


def test_resample_counts_are_deterministic_multinomials():
    counts = resample_counts(30, 200, seed=4)
    assert counts.shape == (200, 30) and counts.dtype == np.int64
    assert (counts.sum(axis=1) == 30).all() and (counts >= 0).all()
    assert np.array_equal(counts, resample_counts(30, 200, seed=4))
    assert not np.array_equal(counts, resample_counts(30, 200, seed=5))
    assert counts.mean() == pytest.approx(1.0)


def test_draws_equal_scores_recomputed_on_the_resampled_test_rows():
    """Each fold's correlations are those of its test rows repeated as often as drawn."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 6))
    y = x[:, :4] + rng.standard_normal((80, 4))
    terms = score("semi_matching", x, y, keep_terms=True)["terms"]
    counts = resample_counts(80, 5, seed=0)
    for b in range(5):
        folds = []
        for t in terms:
            rep = np.repeat(np.arange(t.rows.size), counts[b, t.rows])
            r = [np.corrcoef(t.a[rep, i], t.b[rep, i])[0, 1] for i in range(t.weights.size)]
            folds.append(np.dot(t.weights, r))
        assert draws(terms, counts[b:b + 1])[0] == pytest.approx(np.mean(folds), abs=1e-10)


def test_paired_identical_representations_differ_by_exactly_zero():
    rng = np.random.default_rng(5)
    neurons = rng.standard_normal((120, 10))
    target = neurons[:, :6] + rng.standard_normal((120, 6))
    rows = comparisons.score_against_target(
        {"neurons": neurons, "sae": neurons.copy(), "random": rng.standard_normal((120, 10))},
        target, "V4", ["ridge", "semi_matching"], n_boot=200)
    table = pd.DataFrame(rows).set_index(["comparison", "metric"])
    for metric in ("ridge", "semi_matching"):
        row = table.loc[("SAE→V4 − Neuron→V4", metric)]
        assert np.all(np.asarray(json.loads(row["draws"])) == 0)
        assert row["mean"] == 0 and row["ci_low"] == row["ci_high"] == 0
        assert row["verdict"] == "no difference"
        assert table.loc[("SAE→V4 − RandomSAE→V4", metric), "verdict"] == "gain"


def _sparse_world(rng, n=240, m=12, q=30):
    features = rng.exponential(size=(n, m)) * (rng.random((n, m)) < 0.2)
    target = features[:, rng.integers(0, m, q)] + 0.3 * rng.standard_normal((n, q))
    rotation = np.linalg.qr(rng.standard_normal((m, m)))[0]
    return features, features @ rotation, target


def test_planted_gain_is_called_a_gain():
    features, mixed, target = _sparse_world(np.random.default_rng(6))
    rows = comparisons.score_against_target(
        {"neurons": mixed, "sae": features}, target, "V4", ["semi_matching", "ridge"],
        n_boot=300)
    table = pd.DataFrame(rows).set_index(["comparison", "metric"])
    gain = table.loc[("SAE→V4 − Neuron→V4", "semi_matching")]
    assert gain["verdict"] == "gain" and gain["ci_low"] > 0.1
    assert gain["ci_low"] <= gain["mean"] <= gain["ci_high"]
    # ridge sees through the rotation: no gain to call
    assert table.loc[("SAE→V4 − Neuron→V4", "ridge"), "verdict"] == "no difference"
    assert ("SAE→V4 − RandomSAE→V4", "ridge") not in table.index  # no random given


def test_planted_null_intervals_cover_zero():
    """Two independent, equally informative views of a signal: the difference's 95 %
    interval covers 0 in ≥ 43 of 50 datasets (measured: ≈ 90 % ridge, ≈ 96 % semi-
    matching over 200; where both scores are near 0 it is ≈ 80 %: refit variance is
    not resampled, see the module docstring)."""
    covered = 0
    for s in range(50):
        rng = np.random.default_rng(100 + s)
        z = rng.standard_normal((120, 6))
        target, one, two = (z + rng.standard_normal((120, 6)) for _ in range(3))
        counts = resample_counts(120, 200, seed=s)
        low, high = interval(draws(score("ridge", one, target, keep_terms=True)["terms"], counts)
                             - draws(score("ridge", two, target, keep_terms=True)["terms"],
                                     counts))
        covered += low <= 0 <= high
    assert covered >= 43


def test_seed_level_widens_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(7)
    base = 0.5 + 0.01 * rng.standard_normal(1000)
    agree = seed_draws([base, base + 0.001, base - 0.001], 1000, seed=0)
    disagree = seed_draws([base, base + 0.2, base - 0.2], 1000, seed=0)
    width = [np.subtract(*interval(d)[::-1]) for d in (agree, disagree)]
    assert width[1] > 5 * width[0]
    assert np.array_equal(seed_draws([base], 1000, seed=0), base)
    # one set of seed indices per (seed, n_seeds): SAE and RandomSAE are resampled together
    other = rng.standard_normal((3, 1000))
    sae = [base, base + 0.2, base - 0.2]
    np.testing.assert_allclose(seed_draws(sae, seed=3) - seed_draws(list(other), seed=3),
                               seed_draws([s - o for s, o in zip(sae, other)], seed=3))
    with pytest.raises(SparsealignError, match="n_boot"):
        seed_draws(sae, 10)


def test_interval_verdict_and_aggregate():
    values = np.arange(1001) / 1000.0
    assert interval(values, 0.9) == pytest.approx((0.05, 0.95))
    assert verdict(0.01, 0.2) == "gain" and verdict(-0.3, -0.01) == "loss"
    assert verdict(-0.1, 0.1) == verdict(0.0, 0.0) == "no difference"
    assert np.isnan(interval([np.nan])[0])
    rng = np.random.default_rng(8)
    sessions = [rng.normal(0.1, 0.05, 500), rng.normal(0.3, 0.05, 500)]
    pooled = aggregate(sessions)
    np.testing.assert_allclose(pooled, (sessions[0] + sessions[1]) / 2)
    assert np.subtract(*interval(pooled)[::-1]) < np.subtract(*interval(sessions[0])[::-1])
    with pytest.raises(SparsealignError, match="lengths"):
        aggregate([np.zeros(3), np.zeros(4)])
    with pytest.raises(SparsealignError, match="ci"):
        interval(values, 95)


def _pair_system(rng, features, n_seeds):
    neurons = np.maximum(features @ rng.normal(size=(features.shape[1], 4)), 0)
    return {"neurons": neurons,
            "sae": [features + 0.05 * rng.normal(size=features.shape) for _ in range(n_seeds)],
            "random": [rng.normal(size=features.shape) for _ in range(n_seeds)]}


def test_comparison_rows_with_lists_of_seeds():
    rng = np.random.default_rng(9)
    features = rng.random((150, 5)) * (rng.random((150, 5)) < 0.3)
    a, b = _pair_system(rng, features, 2), _pair_system(rng, features, 2)
    metrics = ["semi_matching", "cka"]
    plain = pd.DataFrame(comparisons.score_comparisons(a, b, metrics, n_folds=3))
    rows = comparisons.score_comparisons(a, b, metrics, n_folds=3, n_boot=100)
    table = pd.DataFrame(rows)
    grid = table[table.comparison.isin(comparisons.COMPARISONS)]
    assert "ci_low" not in plain and "verdict" not in plain
    # every existing row is kept, unchanged
    pd.testing.assert_frame_equal(grid[plain.columns].reset_index(drop=True), plain)
    contrasts = table[table.comparison.isin(comparisons.CONTRASTS)]
    assert len(contrasts) == len(comparisons.CONTRASTS)  # semi_matching only, not cka
    assert set(contrasts.metric) == {"semi_matching"} and set(contrasts.direction) == {"both"}
    assert grid[grid.metric == "cka"][["ci_low", "ci_high"]].isna().all().all()
    semi = grid[grid.metric == "semi_matching"]
    assert (semi.ci_low <= semi.ci_high).all() and semi[["ci_low", "ci_high"]].notna().all().all()
    assert set(grid.set_index("comparison").n_seeds.items()) >= {("Neuron→Neuron", 1),
                                                                 ("SAE→SAE", 2)}
    # a row's folds average the seeds' folds, fold by fold
    one = comparisons.score_comparisons({**a, "sae": a["sae"][1], "random": a["random"][1]},
                                        {**b, "sae": b["sae"][1], "random": b["random"][1]},
                                        ["semi_matching"], n_folds=3)
    zero = comparisons.score_comparisons({**a, "sae": a["sae"][0], "random": a["random"][0]},
                                         {**b, "sae": b["sae"][0], "random": b["random"][0]},
                                         ["semi_matching"], n_folds=3)
    pick = [r for r in rows if r["comparison"] == "SAE→Neuron" and r["direction"] == "A→B"
            and r["metric"] == "semi_matching"][0]
    want = [(np.asarray(json.loads(r0["folds"])) + json.loads(r1["folds"])) / 2
            for r0, r1 in zip(zero, one) if r0["comparison"] == "SAE→Neuron"
            and r0["direction"] == "A→B"][0]
    np.testing.assert_allclose(json.loads(pick["folds"]), want, atol=1e-6)
    # contrasts: observed difference of the 'both' means; draws aggregate across pairs
    both = grid[grid.direction == "both"].set_index(["comparison", "metric"])["mean"]
    gain = contrasts.set_index("comparison").loc["SAE→SAE − Neuron→Neuron"]
    assert gain["mean"] == pytest.approx(both[("SAE→SAE", "semi_matching")]
                                         - both[("Neuron→Neuron", "semi_matching")], abs=1e-9)
    assert gain["verdict"] == "gain" and len(json.loads(gain["draws"])) == 100
    again = pd.DataFrame(comparisons.score_comparisons(a, b, metrics, n_folds=3, n_boot=100))
    pd.testing.assert_frame_equal(again, table)  # deterministic


def test_comparison_inputs_are_checked():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((40, 3))
    with pytest.raises(SparsealignError, match="neurons"):
        comparisons.score_against_target({"neurons": [x, x]}, x, "V4", ["ridge"], n_boot=10)
    with pytest.raises(SparsealignError, match="seeds"):
        comparisons.score_against_target({"neurons": x, "sae": [x, x], "random": [x, x, x]},
                                          x, "V4", ["ridge"], n_boot=10)
    with pytest.raises(SparsealignError, match="n_boot"):
        comparisons.score_against_target({"neurons": x}, x, "V4", ["ridge"], n_boot=-1)


def test_recording_rows_keep_ceilings_and_seed_averages():
    rng = np.random.default_rng(11)
    features, mixed, target = _sparse_world(rng, n=160, q=12)
    repeats = np.stack([target + 0.5 * rng.standard_normal(target.shape) for _ in range(4)], -1)
    sae = [features, features + 0.5 * rng.standard_normal(features.shape)]
    rows = comparisons.score_against_target(
        {"neurons": mixed, "sae": sae}, repeats.mean(-1), "IT", ["ridge", "rsa"],
        target_repeats=repeats, n_boot=100)
    table = pd.DataFrame(rows).set_index(["comparison", "metric"])
    assert table.loc[("SAE→IT", "ridge"), "n_seeds"] == 2
    assert np.isfinite(table.loc[("SAE→IT", "ridge"), ["ceiling", "normalised"]]).all()
    singles = [pd.DataFrame(comparisons.score_against_target(
        {"sae": s}, repeats.mean(-1), "IT", ["ridge"], target_repeats=repeats)).iloc[0]
        for s in sae]
    assert table.loc[("SAE→IT", "ridge"), "mean"] == pytest.approx(
        np.mean([s["mean"] for s in singles]))
    assert table.loc[("SAE→IT", "ridge"), "normalised"] == pytest.approx(
        np.mean([s["normalised"] for s in singles]))
    assert ("SAE→IT − Neuron→IT", "ridge") in table.index
    assert ("SAE→IT − Neuron→IT", "rsa") not in table.index
    assert np.isnan(table.loc[("SAE→IT", "rsa"), "ci_low"])


def test_bootstrap_is_fast_for_a_recording_sized_problem():
    """q = 1000 targets, n = 640 stimuli, 1000 resamples: well under the budget."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((640, 64))
    y = x @ rng.standard_normal((64, 1000)) + 4 * rng.standard_normal((640, 1000))
    terms = score("semi_matching", x, y, keep_terms=True)["terms"]
    counts = resample_counts(640, 1000, seed=0)
    start = time.perf_counter()
    values = draws(terms, counts)
    assert time.perf_counter() - start < 5.0  # ≈ 0.5 s on one shared core
    assert values.shape == (1000,) and np.isfinite(values).all()


def test_one_system_with_seeds_meets_one_without():
    """A single array stands for every seed: B→A rows still see each of A's seeds."""
    rng = np.random.default_rng(13)
    features = rng.random((120, 4)) * (rng.random((120, 4)) < 0.4)
    a = _pair_system(rng, features, 3)
    b = {k: (v[0] if isinstance(v, list) else v) for k, v in _pair_system(rng, features, 1).items()}
    table = pd.DataFrame(comparisons.score_comparisons(a, b, ["ridge"], n_folds=3, n_boot=50))
    rows = table[table.comparison == "SAE→Neuron"].set_index("direction")
    assert rows.loc["A→B", "n_seeds"] == 3 and rows.loc["B→A", "n_seeds"] == 1
    assert rows.loc["both", "n_seeds"] == 3
    assert table[table.comparison.isin(comparisons.CONTRASTS)].n_seeds.eq(3).all()


def test_an_interval_centred_on_its_estimate_contains_it():
    from sparsealign.align.bootstrap import interval

    biased = np.random.default_rng(0).normal(0.03, 0.01, 1000)  # draws biased below 0.05
    low, high = interval(biased, 0.95)
    assert high < 0.05  # the plain percentile interval misses the estimate
    low, high = interval(biased, 0.95, estimate=0.05)
    assert low < 0.05 < high and abs((low + high) / 2 - 0.05) < 0.002
