"""Toy models of superposition (Elhage et al. 2022), exactly as the paper's toy protocol.

n sparse features (active with probability p, value U[0, 1] when active) are squeezed
through m < n ReLU neurons, h = ReLU(x W), and read out as x̂ = ReLU(h Wᵀ + b) under an
importance-weighted MSE. Two initialisation seeds trained on one data stream give two
"superposition arrangements" of the same features.

The data stream is generated from a seed, never stored: batch t of stream s is always
the same tensor, so both members of a seed pair see identical data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from sparsealign import eager_optim


@dataclass(frozen=True)
class ToyConfig:
    n_features: int = 64
    """Number of ground-truth features n."""
    feature_probability: float = 0.1
    """Probability that a feature is active in a sample."""
    steps: int = 10_000
    """Optimiser steps (one pass over the generated stream, no shuffling)."""
    batch_size: int = 1024
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (PyTorch's default)."""
    log_every: int = 100
    """Record the training loss every this many steps."""


def importance(n_features: int) -> torch.Tensor:
    """Feature importance I_i = (1 + 2i/n)^-2, i = 0 … n-1."""
    i = torch.arange(n_features, dtype=torch.float32)
    return (1 + 2 * i / n_features) ** -2


def sample_features(generator: torch.Generator, n_samples: int, n_features: int,
                    probability: float) -> torch.Tensor:
    """Sparse features: U[0, 1] where a Bernoulli(probability) mask is on, else 0."""
    active = torch.rand(n_samples, n_features, generator=generator) < probability
    values = torch.rand(n_samples, n_features, generator=generator)
    return values * active


class ToyModel(nn.Module):
    """h = ReLU(x W), x̂ = ReLU(h Wᵀ + b), W ∈ R^{n×m} Xavier-normal, b = 0."""

    def __init__(self, n_features: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_features, n_hidden)))
        self.b = nn.Parameter(torch.zeros(n_features))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x) @ self.W.T + self.b)


def train_toy_model(n_hidden: int, init_seed: int, data_seed: int, cfg: ToyConfig,
                    progress=None) -> tuple[ToyModel, dict]:
    """Train one toy model; returns the model and its loss curve ``{"step", "loss"}``.

    ``init_seed`` fixes W's initialisation, ``data_seed`` the data stream, so two
    models with the same ``data_seed`` see the same batches in the same order.
    """
    torch.manual_seed(init_seed)
    model = ToyModel(cfg.n_features, n_hidden)
    optimiser = eager_optim.adamw(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = importance(cfg.n_features)
    stream = torch.Generator().manual_seed(data_seed)
    curve = {"step": [], "loss": []}
    running = torch.zeros(())
    for step in range(1, cfg.steps + 1):
        x = sample_features(stream, cfg.batch_size, cfg.n_features, cfg.feature_probability)
        loss = (weights * (x - model(x)) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        eager_optim.step(optimiser)
        running += loss.detach()
        if step % cfg.log_every == 0 or step == cfg.steps:
            window = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            curve["step"].append(step)
            curve["loss"].append(float(running) / window)
            running.zero_()
            if progress is not None:
                progress(step, curve["loss"][-1])
    return model.eval(), curve


def heldout_features(data_seed: int, n_samples: int, cfg: ToyConfig) -> np.ndarray:
    """Held-out samples for a seed pair, from a stream disjoint from the training one."""
    # Training streams use seeds 0, 1, 2, …; held-out streams live far above them.
    stream = torch.Generator().manual_seed(1_000_003 + data_seed)
    return sample_features(stream, n_samples, cfg.n_features, cfg.feature_probability).numpy()


@torch.no_grad()
def hidden_activations(model: ToyModel, features: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """The neurons' responses h = ReLU(x W) to each feature vector, float32."""
    x = torch.as_tensor(features, dtype=torch.float32)
    return torch.cat([model.hidden(chunk) for chunk in x.split(batch_size)]).numpy()


def config_dict(cfg: ToyConfig) -> dict:
    return asdict(cfg)
