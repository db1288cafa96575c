import numpy as np
import torch

from sparsealign.models import toy


def test_importance_matches_protocol():
    weights = toy.importance(64)
    assert weights[0] == 1.0
    np.testing.assert_allclose(weights[32].item(), (1 + 2 * 32 / 64) ** -2)


def test_features_are_sparse_uniform():
    x = toy.sample_features(torch.Generator().manual_seed(0), 20_000, 64, 0.1)
    assert abs((x > 0).float().mean().item() - 0.1) < 0.005
    active = x[x > 0]
    assert active.max() <= 1 and abs(active.mean().item() - 0.5) < 0.01


def test_seed_pair_shares_the_data_stream_but_not_the_init():
    cfg = toy.ToyConfig(steps=3, batch_size=8, log_every=1)
    a, _ = toy.train_toy_model(4, init_seed=0, data_seed=7, cfg=cfg)
    b, _ = toy.train_toy_model(4, init_seed=1, data_seed=7, cfg=cfg)
    a2, _ = toy.train_toy_model(4, init_seed=0, data_seed=7, cfg=cfg)
    assert not torch.equal(a.W, b.W)
    assert torch.equal(a.W, a2.W)  # deterministic


def test_model_shapes_and_xavier_init():
    torch.manual_seed(0)
    model = toy.ToyModel(64, 16)
    assert model.W.shape == (64, 16) and torch.all(model.b == 0)
    assert abs(model.W.std().item() - (2 / (64 + 16)) ** 0.5) < 0.02
    x = torch.rand(5, 64)
    assert model(x).shape == (5, 64) and model.hidden(x).shape == (5, 16)
    assert torch.all(model.hidden(x) >= 0)


def test_training_reduces_the_importance_weighted_loss():
    cfg = toy.ToyConfig(steps=300, batch_size=256, log_every=50)
    _, curve = toy.train_toy_model(16, 0, 0, cfg)
    assert curve["step"][-1] == 300
    assert curve["loss"][-1] < 0.7 * curve["loss"][0]


def test_heldout_features_are_disjoint_from_training_stream():
    cfg = toy.ToyConfig()
    held = toy.heldout_features(0, 64, cfg)
    first_batch = toy.sample_features(torch.Generator().manual_seed(0), 64, 64, 0.1).numpy()
    assert held.shape == (64, 64) and not np.array_equal(held, first_batch)
    np.testing.assert_array_equal(held, toy.heldout_features(0, 64, cfg))
