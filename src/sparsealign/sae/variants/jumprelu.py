"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre·H(pre − θ), L0 penalty.

H has no useful gradient, so the thresholds θ = exp(log_threshold) learn through the
straight-through pseudo-derivative with a rectangle kernel of width ε.
"""

from __future__ import annotations

import torch

from sparsealign.sae.variants import register
from sparsealign.sae.variants.base import SAE


def _kernel(pre, theta, eps):
    """Rectangle kernel K((pre − θ)/ε)/ε."""
    return ((pre - theta).abs() < eps / 2).to(pre.dtype) / eps


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        grad_theta = -(theta * _kernel(pre, theta, ctx.eps) * grad).sum(dim=0)
        return grad * (pre > theta), grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        return None, -(_kernel(pre, theta, ctx.eps) * grad).sum(dim=0), None


@register("jumprelu")
class JumpReLUSAE(SAE):
    inference = "threshold"

    def __init__(self, cfg, d_in, generator):
        super().__init__(cfg, d_in, generator)
        init = torch.full((cfg.n_latents,), float(cfg.jumprelu_init_threshold))
        self.log_threshold = torch.nn.Parameter(init.log())

    def inference_threshold(self):
        return self.log_threshold.exp()

    def activate(self, x, pre):
        theta, eps = self.log_threshold.exp(), self.cfg.jumprelu_bandwidth
        z = _JumpReLU.apply(pre, theta, eps)
        l0 = _Step.apply(pre, theta, eps).sum(dim=1).mean()
        return z, self.cfg.l0_coef * l0
