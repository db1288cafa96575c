"""Known answers from SCIENCE.md: n = 1000 stimuli, 64 Gaussian units."""

import json

import numpy as np
import pytest

from sparsealign.align import METRICS, score

ALL = sorted(METRICS)
UNIT_LEVEL = ("semi_matching", "soft_matching", "hungarian")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 64))
    rotation, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    return {"x": x, "perm": x[:, rng.permutation(64)], "affine": 3 * x + 5,
            "rotated": x @ rotation, "noise": rng.standard_normal((1000, 64))}


@pytest.mark.parametrize("metric", ALL)
def test_permuted_copy_scores_one(data, metric):
    assert score(metric, data["x"], data["perm"])["mean"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("metric", ALL)
def test_affine_rescaling_changes_nothing(data, metric):
    base = score(metric, data["x"], data["perm"])
    moved = score(metric, data["x"], 3 * data["perm"] + 5)
    assert moved["folds"] == pytest.approx(base["folds"], abs=1e-9)


@pytest.mark.parametrize("metric", ["ridge", "cka", "cka_debiased", "procrustes"])
def test_rotation_is_invisible_to_linear_metrics(data, metric):
    assert score(metric, data["x"], data["rotated"])["mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("metric", UNIT_LEVEL)
def test_rotation_hides_alignment_from_unit_metrics(data, metric):
    assert 0.2 < score(metric, data["x"], data["rotated"])["mean"] < 0.4


@pytest.mark.parametrize("metric", ["ridge", "cka_debiased", "semi_matching", "soft_matching",
                                    "procrustes", "rsa"])
def test_independent_noise_scores_zero(data, metric):
    result = score(metric, data["x"], data["noise"])
    assert abs(result["mean"]) < 0.03
    assert abs(result["mean"]) < 4 * result["sem"] + 0.01


@pytest.mark.parametrize("metric", ALL)
def test_duplicating_units_is_not_penalised(data, metric):
    doubled = np.hstack([data["x"], data["x"]])
    assert score(metric, doubled, data["perm"])["mean"] == pytest.approx(1.0, abs=1e-6)
    assert score(metric, data["perm"], doubled)["mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("metric", ALL)
def test_result_is_plain_json(data, metric):
    result = score(metric, data["x"][:200], data["rotated"][:200, :10])
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    for key in ("metric", "mean", "sem", "folds", "n_folds", "n_stimuli", "n_source",
                "n_target", "dropped_source", "dropped_target"):
        assert key in result
    assert len(result["folds"]) == 5
    assert result["sem"] == pytest.approx(np.std(result["folds"], ddof=1) / np.sqrt(5))
