"""BatchTopK SAE (Bussmann et al. 2024): the k·batch largest activations of the whole batch.

Rows keep k latents on average. At inference a row cannot see its batch, so the SAE keeps
activations above a learned threshold: the bias-corrected EMA of the smallest activation
each training batch kept.
"""

from __future__ import annotations

import torch

from sparsealign.sae.kernels import SparseCode
from sparsealign.sae.variants import register
from sparsealign.sae.variants.base import SAE


@register("batchtopk")
class BatchTopKSAE(SAE):
    inference = "threshold"
    sparse_capable = True

    def __init__(self, cfg, d_in, generator):
        super().__init__(cfg, d_in, generator)
        self.register_buffer("threshold", torch.zeros(cfg.n_latents))
        # EMA and its bias-correction weight; both stay on the device (no sync per step).
        self.register_buffer("threshold_ema", torch.zeros(()))
        self.register_buffer("threshold_weight", torch.zeros(()))

    def inference_threshold(self):
        return self.threshold

    def activate(self, x, pre):
        batch = x.shape[0]
        flat = pre.detach().relu().flatten()
        kept = flat.topk(min(self.cfg.k * batch, flat.numel()), sorted=False).indices
        code = SparseCode.from_flat(kept, batch, self.cfg.n_latents)
        values = self._gather(pre, code, x).relu()
        if self.training:
            self._update_threshold(values.detach())
        return code.with_values(values), x.new_zeros(())

    @torch.no_grad()
    def _update_threshold(self, values: torch.Tensor) -> None:
        positive = values > 0
        smallest = values.masked_fill(~positive, float("inf")).min()
        # A batch with no positive activation carries no information: leave the EMA alone.
        m = torch.where(positive.any(), self.cfg.threshold_momentum, 1.0)
        self.threshold_ema.copy_(m * self.threshold_ema
                                 + (1 - m) * smallest.nan_to_num(posinf=0.0))
        self.threshold_weight.copy_(m * self.threshold_weight + (1 - m))
        estimate = self.threshold_ema / self.threshold_weight.clamp_min(1e-12)
        self.threshold.copy_(estimate.expand_as(self.threshold))
