"""Input policies: NaN is an error, constant units are dropped and counted, n too small."""

import numpy as np
import pytest

from sparsealign.align import METRICS, feature_recovery, fold_labels, score
from sparsealign.errors import SparsealignError


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 8))
    return x, x @ rng.standard_normal((8, 6)) + 0.5 * rng.standard_normal((300, 6))


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_an_error(xy, metric, bad):
    x, y = xy[0].copy(), xy[1]
    x[7, 2] = bad
    with pytest.raises(SparsealignError, match="source: 1 stimuli have NaN"):
        score(metric, x, y)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_too_few_stimuli_is_an_error(xy, metric):
    with pytest.raises(SparsealignError, match="stimuli"):
        score(metric, xy[0][:3], xy[1][:3], n_folds=1)
    with pytest.raises(SparsealignError, match="at least 10"):
        score(metric, xy[0][:9], xy[1][:9])


def test_mismatched_rows_and_unknowns_are_errors(xy):
    with pytest.raises(SparsealignError, match="300 vs 299"):
        score("ridge", xy[0], xy[1][:-1])
    with pytest.raises(SparsealignError, match="metric"):
        score("cosine", *xy)
    with pytest.raises(SparsealignError, match="unknown options"):
        score("ridge", *xy, epsilon=0.1)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_constant_units_are_dropped_and_counted(xy, metric):
    x, y = xy
    base = score(metric, x, y)
    x_c = np.hstack([x, np.full((300, 2), 7.0)])
    y_c = np.hstack([y, np.zeros((300, 1))])
    result = score(metric, x_c, y_c)
    assert result["dropped_source"] == 2 and result["dropped_target"] == 1
    assert base["dropped_source"] == base["dropped_target"] == 0
    if metric not in ("hungarian",):  # hungarian's "pairs" count is unchanged too
        assert result["folds"] == pytest.approx(base["folds"], abs=1e-9)


def test_unit_constant_on_one_fit_split_only():
    """A sparse unit active only in fold 0's test rows is constant on fold 0's fit split."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5))
    folds = fold_labels(200, 5, seed=0)
    sparse = np.where(folds == 0, rng.standard_normal(200), 0.0)
    result = score("semi_matching", np.column_stack([x, sparse]), x)
    assert result["dropped_source"] == 1
    assert result["mean"] == pytest.approx(1.0)


def test_test_split_constant_counts_as_zero():
    """A target that is constant on a test fold scores r = 0 there, not NaN."""
    rng = np.random.default_rng(3)
    folds = fold_labels(200, 5, seed=0)
    y = np.where(folds == 2, 1.0, rng.standard_normal(200))[:, None]
    x = y + 0.1 * rng.standard_normal((200, 1))
    for metric in ("semi_matching", "hungarian", "soft_matching", "ridge"):
        result = score(metric, x, y)
        assert result["folds"][2] == 0.0
        assert all(f > 0.9 for i, f in enumerate(result["folds"]) if i != 2)


def test_feature_recovery():
    rng = np.random.default_rng(4)
    features = rng.random((500, 6)) * (rng.random((500, 6)) < 0.2)
    units = np.hstack([2 * features[:, ::-1] + 1, rng.standard_normal((500, 3)),
                       np.zeros((500, 1))])
    out = feature_recovery(np.hstack([features, np.ones((500, 1))]), units)
    assert out["best_corr_mean"] == pytest.approx(1.0)
    assert out["mcc"] == pytest.approx(1.0)
    assert out["dropped_features"] == 1 and out["dropped_units"] == 1
    assert len(out["best_corr"]) == 6
    with pytest.raises(SparsealignError, match="NaN"):
        feature_recovery(np.full((10, 2), np.nan), units[:10])
