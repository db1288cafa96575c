"""Inference: bootstrap intervals over stimuli and the stimulus-permutation null."""

import numpy as np
import pytest

from sparsealign.align import bootstrap, fold_labels, permutation_null, score


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6))
    return x, x[:, ::-1] * 0.5 + rng.standard_normal((200, 6))


def test_grouped_folds_keep_copies_together():
    groups = np.repeat(np.arange(50), 3)
    labels = fold_labels(150, 5, seed=1, groups=groups)
    assert all(np.unique(labels[groups == g]).size == 1 for g in range(50))
    assert sorted(np.bincount(labels).tolist()) == [30] * 5


def test_bootstrap_interval_brackets_the_score(pair):
    result = score("semi_matching", *pair, n_boot=30)
    assert result["ci_low"] < result["mean"] < result["ci_high"]
    assert result["ci_level"] == 0.95 and result["n_boot"] == 30
    again = bootstrap("semi_matching", *pair, n_boot=30)
    assert again["ci_low"] == result["ci_low"]                 # seeded


def test_permutation_null(pair):
    real = score("cka_debiased", *pair, n_permutations=19)
    assert real["p_value"] == pytest.approx(1 / 20)
    assert abs(real["null_mean"]) < 0.05
    rng = np.random.default_rng(5)
    noise = permutation_null("ridge", pair[0], rng.standard_normal((200, 3)),
                             n_permutations=19)
    assert noise["p_value"] > 0.05


def test_per_target_scores_on_request(pair):
    import json

    result = score("ridge", *pair, per_target=True)
    assert len(result["per_target"]) == 6 and len(result["per_target_r2"]) == 6
    assert np.mean(result["per_target"]) == pytest.approx(result["mean"], abs=1e-9)
    assert "per_target" not in score("ridge", *pair)
    json.dumps(score("semi_matching", *pair, per_target=True), allow_nan=False)


def test_stores_are_matched_by_stimulus_id(pair):
    from sparsealign.align import feature_recovery
    from sparsealign.schema import make_store

    x, y = pair
    ids = np.array([f"img{i:03d}" for i in range(200)])
    order = np.random.default_rng(3).permutation(200)
    a = make_store(x, ids, [f"a{j}" for j in range(6)], source="a", layer="l", kind="neurons")
    b = make_store(y[order], ids[order], [f"b{j}" for j in range(6)], source="b", layer="l",
                   kind="neurons")
    assert score("cka", a, b)["folds"] == pytest.approx(score("cka", x, y)["folds"])
    assert feature_recovery(a, b)["mcc"] == pytest.approx(feature_recovery(x, y)["mcc"])
