"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, April 2024 update).

Weighting |z_i| by ‖W_dec,i‖ makes the penalty invariant to trading encoder scale for
decoder scale, so the decoder needs no unit-norm constraint.
"""

from __future__ import annotations

from sparsealign.sae.variants import register
from sparsealign.sae.variants.base import SAE


@register("relu")
class ReLUSAE(SAE):
    inference = "threshold"
    unit_norm_decoder = False

    def inference_threshold(self):
        return self.b_enc.new_zeros(())

    def activate(self, x, pre):
        z = pre.relu()
        l1 = (z * self.W_dec.norm(dim=1)).sum(dim=1).mean()
        return z, self.cfg.l1_coef * l1
