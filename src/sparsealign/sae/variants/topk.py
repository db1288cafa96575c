"""TopK SAE (Gao et al. 2024): exactly the k largest ReLU pre-activations of each row."""

from __future__ import annotations

from sparsealign.sae.kernels import SparseCode
from sparsealign.sae.variants import register
from sparsealign.sae.variants.base import SAE, dense_topk


@register("topk")
class TopKSAE(SAE):
    inference = "topk"
    sparse_capable = True

    def activate(self, x, pre):
        indices = pre.detach().topk(self.cfg.k, dim=1, sorted=False).indices
        if not self.sparse:
            # Dense path: a gather and a scatter (no flattened pattern, no index_put).
            return dense_topk(pre, indices, pre.gather(1, indices).relu()), x.new_zeros(())
        code = SparseCode.from_topk(indices)
        return code.with_values(self._gather(pre, code, x).relu()), x.new_zeros(())
