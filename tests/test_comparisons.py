import json

import numpy as np
import pandas as pd
import pytest

from sparsealign import comparisons, report
from sparsealign.latents import training_split
from sparsealign.errors import SparsealignError


def _system(rng, features, mixing):
    neurons = np.maximum(features @ mixing, 0)
    return {"neurons": neurons, "sae": features + 0.01 * rng.normal(size=features.shape),
            "random": rng.normal(size=features.shape)}


def test_grid_has_every_comparison_in_both_directions(rng):
    features = rng.random((400, 6)) * (rng.random((400, 6)) < 0.3)
    a = _system(rng, features, rng.normal(size=(6, 3)))
    b = _system(rng, features, rng.normal(size=(6, 3)))
    rows = comparisons.score_comparisons(a, b, ["semi_matching"], n_folds=3)
    table = pd.DataFrame(rows)
    assert len(table) == len(comparisons.COMPARISONS) * 3
    both = table[table.direction == "both"].set_index("comparison")["mean"]
    # latents that are the features themselves align far better than mixed neurons
    assert both["SAE→SAE"] > 0.9 > both["Neuron→Neuron"]
    assert both["RandomSAE→SAE"] < 0.2
    # the 'both' row averages the two directions fold by fold
    ab, ba, avg = (table[(table.comparison == "SAE→Neuron") & (table.direction == d)].iloc[0]
                   for d in ("A→B", "B→A", "both"))
    np.testing.assert_allclose(json.loads(avg.folds),
                               (np.array(json.loads(ab.folds)) + json.loads(ba.folds)) / 2, atol=1e-6)


def test_recovery_rows_cover_every_representation(rng):
    features = rng.random((300, 5)) * (rng.random((300, 5)) < 0.3)
    systems = {"A": _system(rng, features, rng.normal(size=(5, 3))),
               "B": _system(rng, features, rng.normal(size=(5, 3)))}
    table = pd.DataFrame(comparisons.recovery_rows(features, systems))
    mcc = table[(table.metric == "mcc") & (table.direction == "both")].set_index("comparison")["mean"]
    assert mcc["GroundTruth→SAE"] > 0.95 and mcc["GroundTruth→Neuron"] < mcc["GroundTruth→SAE"]


def test_summary_over_pairs_and_relative_gains():
    rows = []
    for pair, (nn, ss) in enumerate([(0.3, 0.6), (0.4, 0.8)]):
        for comparison, value in (("Neuron→Neuron", nn), ("SAE→SAE", ss)):
            rows.append({"hidden": 32, "pair": pair, "comparison": comparison, "direction": "both",
                         "metric": "semi_matching", "mean": value})
    summary = report.summarise_over_pairs(pd.DataFrame(rows)).set_index("comparison")
    assert summary.loc["SAE→SAE", "mean"] == pytest.approx(0.7)
    assert summary.loc["SAE→SAE", "sem"] == pytest.approx(0.1)
    assert summary.loc["SAE→SAE", "gain"] == pytest.approx(0.7 / 0.35 - 1)
    assert summary.loc["Neuron→Neuron", "gain"] == 0


def test_figure_and_report_are_written(tmp_path):
    rows = [{"hidden": m, "pair": p, "comparison": c, "direction": "both", "metric": "ridge",
             "mean": v + 0.01 * p} for m in (8, 32) for p in (0, 1)
            for c, v in (("Neuron→Neuron", 0.5), ("SAE→Neuron", 0.7), ("RandomSAE→Neuron", 0.2))]
    summary = report.summarise_over_pairs(pd.DataFrame(rows))
    summary.to_csv(tmp_path / "summary.csv", index=False)
    report.paper_figure(summary, tmp_path / "figure.png")
    report.write_report(tmp_path / "report.html", [tmp_path / "summary.csv"], [tmp_path / "figure.png"])
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "(+39.6%)" in html


def test_training_split_is_by_store_order():
    train, evaluate = training_split([f"s{i}" for i in range(10)], 0.8)
    assert list(train) == [f"s{i}" for i in range(8)] and list(evaluate) == ["s8", "s9"]
    both, same = training_split(["a", "b"], 1.0)
    assert list(both) == list(same) == ["a", "b"]
    with pytest.raises(SparsealignError, match="train_fraction"):
        training_split(["a", "b"], 0.2)
