"""Cross-validated ridge: α chosen on the training fold only, primal and dual solvers."""

import numpy as np
import pytest

from sparsealign.align import fold_labels, score
from sparsealign.align.regression import ridge
from sparsealign.errors import SparsealignError


def _data(n, p, q, noise, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    w = rng.standard_normal((p, q)) * (rng.random((p, q)) < 0.2)
    return x, x @ w + noise * rng.standard_normal((n, q))


def _reference(x, y, folds, alphas):
    """Plain per-fold ridge with train standardisation and the same per-target α."""
    from sklearn.linear_model import Ridge

    scores = []
    for k, chosen in enumerate(alphas):
        tr, te = folds != k, folds == k
        mx, sx, my, sy = x[tr].mean(0), x[tr].std(0), y[tr].mean(0), y[tr].std(0)
        xt, yt = (x - mx) / sx, (y - my) / sy
        pred = np.column_stack([
            Ridge(alpha=a, fit_intercept=False, solver="svd").fit(xt[tr], yt[tr, j])
            .predict(xt[te]) for j, a in enumerate(chosen)])
        r = [np.corrcoef(pred[:, j], yt[te, j])[0, 1] for j in range(y.shape[1])]
        scores.append(np.mean(r))
    return scores


@pytest.mark.parametrize("shape", [(300, 20, 6), (60, 150, 5)])
def test_predictions_match_a_plain_ridge(shape, monkeypatch):
    from sparsealign.align import regression

    x, y = _data(*shape, noise=2.0)
    folds = fold_labels(shape[0], 5, seed=0)
    chosen = []
    original = regression._gcv_alphas
    monkeypatch.setattr(regression, "_gcv_alphas",
                        lambda *a: chosen.append(original(*a)) or chosen[-1])
    result = ridge(x, y, folds)
    assert result["solver"] == ["primal" if shape[0] > shape[1] else "dual"] * 5
    assert result["folds"] == pytest.approx(_reference(x, y, folds, chosen), abs=1e-8)


def test_alpha_choice_tracks_sklearn_loo():
    from sklearn.linear_model import RidgeCV

    x, y = _data(400, 30, 8, noise=4.0, seed=1)
    ours = score("ridge", x, y, n_folds=1)
    xs, ys = (x - x.mean(0)) / x.std(0), (y - y.mean(0)) / y.std(0)
    loo = RidgeCV(alphas=ours["alpha_grid"], alpha_per_target=True).fit(xs, ys).alpha_
    assert ours["alpha_median"] == pytest.approx(np.median(loo), rel=10)  # same decade ±1


def test_noise_is_zero_signal_is_high_and_r2_reported():
    x, y = _data(500, 20, 5, noise=0.5)
    good = score("ridge", x, y)
    assert good["mean"] > 0.9 and good["r2_mean"] > 0.8
    assert good["median_mean"] > 0.9
    rng = np.random.default_rng(9)
    bad = score("ridge", x, rng.standard_normal((500, 5)))
    assert abs(bad["mean"]) < 0.05 and bad["r2_mean"] < 0.02


def test_reverse_direction_and_torch_path():
    x, y = _data(200, 10, 3, noise=1.0)
    forward = score("ridge", x, y, reverse=True)
    backward = score("ridge", y, x)
    assert forward["reverse_folds"] == backward["folds"]
    assert forward["reverse_mean"] == pytest.approx(backward["mean"])
    torch_run = score("ridge", x, y, device="torch:cpu")
    assert torch_run["folds"] == pytest.approx(forward["folds"], abs=1e-10)
    x_wide, y_wide = _data(50, 120, 4, noise=1.0)
    assert score("ridge", x_wide, y_wide, device="torch:cpu")["folds"] == pytest.approx(
        score("ridge", x_wide, y_wide)["folds"], abs=1e-8)


def test_bad_alphas_are_an_error():
    x, y = _data(100, 5, 2, noise=1.0)
    with pytest.raises(SparsealignError, match="alphas"):
        score("ridge", x, y, alphas=[0.0, 1.0])
