import numpy as np
import pytest
import torch

from sparsealign import schema, theory
from sparsealign.errors import SparsealignError
from sparsealign.models import toy


def _direct_simulation(W_a, W_b, n, p, rng):
    """ReLU(x W) correlations by an independent numpy draw of the toy feature distribution."""
    x = (rng.random((n, W_a.shape[0])) < p) * rng.random((n, W_a.shape[0]))
    h_a, h_b = np.maximum(x @ W_a, 0), np.maximum(x @ W_b, 0)
    return np.corrcoef(h_a.T, h_b.T)[: W_a.shape[1], W_a.shape[1]:], x


def test_represented_counts_on_constructed_weights():
    W = np.zeros((10, 3))
    W[0] = [0.6, 0, 0]          # norm 0.6: represented
    W[1] = [0.3, 0.4, 0]        # norm 0.5: not (strictly greater)
    W[2] = [0.3, 0.4, 0.1]      # norm 0.51: represented
    W[3] = [-1.0, 0, 0]         # sign does not matter
    mask = theory.represented(W)
    assert mask.tolist() == [True, False, True, True] + [False] * 6
    assert theory.represented(W, threshold=0.05).sum() == 4
    assert theory.represented(W, threshold=0.0).sum() == 4
    with pytest.raises(SparsealignError):
        theory.represented(np.zeros(5))


def test_arrangement_semi_matching_is_one_for_a_permuted_copy(rng):
    W_a = rng.normal(size=(20, 6))
    W_b = W_a[:, rng.permutation(6)] * rng.uniform(0.5, 2, size=6)  # permuted, rescaled
    shared = theory.represented(W_a) & theory.represented(W_b)
    out = theory.arrangement_semi_matching(W_a, W_b, shared)
    assert out["forward"] == pytest.approx(1) and out["reverse"] == pytest.approx(1)
    assert out["mean"] == pytest.approx(1) and out["n_shared"] == shared.sum()
    # Signed: a negated copy is a different set of ReLU neurons.
    assert theory.arrangement_semi_matching(W_a, -W_a, shared)["mean"] < 0.9
    # Restriction to shared features: weights on other features are ignored.
    W_c = W_b.copy()
    W_c[~shared] = rng.normal(size=((~shared).sum(), 6))
    assert theory.arrangement_semi_matching(W_a, W_c, shared)["mean"] == pytest.approx(1)
    with pytest.raises(SparsealignError):
        theory.arrangement_semi_matching(W_a, W_b, np.zeros(20, bool))


def test_prediction_equals_a_direct_simulation_of_relu_correlations(rng):
    W_a, W_b = rng.normal(size=(16, 4)), rng.normal(size=(16, 5))
    x = theory.sample_features(60_000, 16, 0.1, seed=3)
    predicted = theory.predicted_correlations(W_a, W_b, x)
    direct, x_direct = _direct_simulation(W_a, W_b, 60_000, 0.1, rng)
    assert predicted.shape == (4, 5)
    assert np.abs(predicted - direct).max() < 0.02
    # The pre-activation (linear) correlation is the cosine of the weight columns.
    linear = np.corrcoef((x_direct @ W_a).T, (x_direct @ W_b).T)[:4, 4:]
    assert np.abs(theory.preactivation_correlations(W_a, W_b) - linear).max() < 0.02
    # ... and the ReLU changes it.
    assert np.abs(theory.preactivation_correlations(W_a, W_b) - direct).max() > 0.05
    sm = theory.predicted_semi_matching(predicted)
    assert sm["forward"] == pytest.approx(predicted.max(axis=0).mean())
    assert sm["reverse"] == pytest.approx(predicted.max(axis=1).mean())


def test_dead_neurons_are_left_out_and_counted(rng):
    W_a, W_b = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    W_a[:, 1] = -np.abs(W_a[:, 1])  # x ≥ 0: this ReLU never fires
    predicted = theory.predicted_correlations(W_a, W_b, theory.sample_features(5000, 12, 0.2))
    assert np.isnan(predicted[1]).all() and np.isfinite(predicted[[0, 2]]).all()
    sm = theory.predicted_semi_matching(predicted)
    assert sm["dropped_source"] == 1
    assert sm["forward"] == pytest.approx(predicted[[0, 2]].max(axis=0).mean())


def _save_member(tmp_path, model, hidden, seed, stimuli, params):
    values = toy.hidden_activations(model, stimuli)
    ids = [f"toy0-{i:07d}" for i in range(stimuli.shape[0])]
    units = [f"hidden/{i:05d}" for i in range(hidden)]
    store = tmp_path / f"m{hidden}_seed{seed}.zarr"
    schema.save_store(schema.make_store(values, ids, units, source=f"toy-m{hidden}-seed{seed}",
                                        layer="hidden", kind="neurons", config=params), store)
    path = tmp_path / f"m{hidden}_seed{seed}.pt"
    torch.save({"state_dict": model.state_dict(), "n_hidden": hidden, "config": params}, path)
    return path, store


def test_end_to_end_two_tiny_toy_models(tmp_path):
    params = {"n_features": 64, "feature_probability": 0.1, "steps": 300, "batch_size": 256}
    cfg = toy.ToyConfig(**params)
    stimuli = toy.heldout_features(0, 30_000, cfg)
    models, stores, labels = [], [], []
    for seed in (0, 1):
        model, _ = toy.train_toy_model(8, seed, 0, cfg)
        path, store = _save_member(tmp_path, model, 8, seed, stimuli, params)
        models.append(path), stores.append(store)
        labels.append({"hidden": 8, "pair": 0, "seed": seed})
    table_out, figure_out = tmp_path / "theory.csv", tmp_path / "theory.png"
    table = theory.run(models[::-1], stores[::-1], labels[::-1],
                       {"n_features": 64, "feature_probability": 0.1, "n_samples": 30_000,
                        "seed": 5}, table_out, figure_out)
    assert table_out.exists() and figure_out.stat().st_size > 10_000
    row = table.iloc[0]
    assert (row["seed_a"], row["seed_b"]) == (0, 1)  # A = lower seed, whatever the order
    assert abs(row["predicted_semi_matching"] - row["measured_semi_matching"]) < 0.05
    assert row["within_band"] and row["predicted_vs_measured_r"] > 0.95
    assert row["method"] == "monte-carlo ReLU, 30000 samples"
    assert 0 < row["n_shared"] <= min(row["n_represented_a"], row["n_represented_b"])
    assert not list(tmp_path.glob("*.tmp-*"))
    # A member without its partner, and weights of the wrong width, are user errors.
    with pytest.raises(SparsealignError, match="exactly two seeds"):
        theory.run(models[:1], stores[:1], labels[:1], {"n_features": 64,
                   "feature_probability": 0.1}, table_out, figure_out)
    with pytest.raises(SparsealignError, match="n_features = 32"):
        theory.run(models, stores, labels, {"n_features": 32, "feature_probability": 0.1},
                   table_out, figure_out)
