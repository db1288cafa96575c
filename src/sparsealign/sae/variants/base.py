"""What every SAE variant shares: parameters, the inference form, the loss skeleton, AuxK."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sparsealign.sae.kernels import SparseCode, decode_sparse, gather_preacts

ENCODER_INIT_NORM = 3 ** -0.5
#: ``decoder_impl="auto"`` on CPU takes the sparse path from this many latents on: below it
#: the dense products are so small that the sparse kernels' fixed costs dominate (measured
#: on one CPU thread: dense is 1.2× faster at 64 and 256 latents, sparse 1.4× at 512).
SPARSE_MIN_LATENTS = 512
#: ε of ``input_norm="layernorm"``.
LAYERNORM_EPS = 1e-5

#: Latent code of a training batch: a dense (batch, latents) tensor or a SparseCode.
Acts = torch.Tensor | SparseCode


def sparse_path(cfg) -> bool:
    """Whether a TopK-family SAE of ``cfg`` trains through the sparse kernels.

    ``decoder_impl="auto"``: on CPU from :data:`SPARSE_MIN_LATENTS` latents on, with
    k ≤ latents / 8; never on CUDA, where the dense products cost less than the sparse
    kernels' scatters (H200, d = 768, 12,288 latents, k = 32, batch 2,048, bf16: 1.23 ms
    of GPU time per step dense, 1.90 ms sparse; ``benchmarks/gpu_sae_profile.py``).
    """
    if cfg.decoder_impl != "auto":
        return cfg.decoder_impl == "sparse"
    return (not cfg.trains_on_cuda() and 8 * cfg.k <= cfg.n_latents
            and cfg.n_latents >= SPARSE_MIN_LATENTS)


class StepOutput(NamedTuple):
    """One training batch: the loss to minimise and on-device statistics (no host sync)."""

    loss: torch.Tensor
    terms: dict          # name → 0-d tensor: mse, aux_loss, sparsity_loss
    x_hat: torch.Tensor
    fired: torch.Tensor  # (latents,) bool: fired at least once in this batch
    l0: torch.Tensor     # mean active latents per row


class SAE(nn.Module):
    """Base of all variants: ``pre = x W_encᵀ + b_enc`` → code → ``x̂ = z W_dec + b_dec``.

    ``W_enc`` is stored (latents, d_in) like ``nn.Linear.weight`` so that per-latent
    gradients are contiguous rows. Subclasses set :attr:`inference`, and implement
    :meth:`activate` (training code + sparsity penalty) and, for the threshold form,
    :meth:`inference_threshold`.
    """

    name: ClassVar[str]
    inference: ClassVar[str] = "threshold"   # "topk" or "threshold"
    unit_norm_decoder: ClassVar[bool] = True
    sparse_capable: ClassVar[bool] = False   # activate() returns a SparseCode

    def __init__(self, cfg, d_in: int, generator: torch.Generator):
        super().__init__()
        self.cfg, self.d_in = cfg, d_in
        n = cfg.n_latents
        w_dec = torch.randn(n, d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        # Tied initialisation (Gao et al. 2024): every latent starts reading its own direction,
        # with the row norm of PyTorch's default Linear init (as in sparsify), which trains
        # faster under Adam than unit rows.
        self.W_enc = nn.Parameter(w_dec * ENCODER_INIT_NORM)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.sparse = self.sparse_capable and sparse_path(cfg)

    # ---- inference form -------------------------------------------------------------
    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as this SAE models it: with ``cfg.input_norm == "layernorm"`` each row
        z-scored across its units (ε = 1e-5), else ``x``. ``decode`` reconstructs this."""
        if self.cfg.input_norm == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), eps=LAYERNORM_EPS)
        return x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations of an already prepared input (:meth:`prepare_input`)."""
        return F.linear(x, self.W_enc, self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense (batch, latents) code of the raw input ``x`` (prepared here)."""
        pre = self.pre_acts(self.prepare_input(x))
        if self.inference == "topk":
            values, indices = pre.topk(self.cfg.k, dim=1)
            return torch.zeros_like(pre).scatter_(1, indices, values.relu())
        return pre * (pre > self.inference_threshold())

    def inference_threshold(self) -> torch.Tensor:
        """Per-latent threshold (≥ 0) of the threshold form."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``prepare_input(x)``."""
        return self.decode(self.encode(x))

    # ---- training -------------------------------------------------------------------
    def activate(self, x: torch.Tensor, pre: torch.Tensor) -> tuple[Acts, torch.Tensor]:
        """Training code of a batch and its sparsity penalty (already weighted)."""
        raise NotImplementedError

    def training_step(self, x: torch.Tensor, dead: torch.Tensor) -> StepOutput:
        """Loss of one prepared batch; ``dead`` (latents,) bool marks the latents AuxK revives."""
        if self.sparse:
            with torch.no_grad():
                pre = self.pre_acts(x)
        else:
            pre = self.pre_acts(x)
        acts, penalty = self.activate(x, pre)
        x_hat = self._decode_acts(acts) + self.b_dec
        mse = (x_hat - x).pow(2).mean()
        aux = self._aux_loss(x, x_hat, pre, dead)
        loss = mse + penalty + self.cfg.aux_k_coef * aux
        fired, l0 = _activity(acts, self.cfg.n_latents)
        terms = {"mse": mse.detach(), "aux_loss": aux.detach(), "sparsity_loss": penalty.detach()}
        return StepOutput(loss, terms, x_hat.detach(), fired, l0)

    def _gather(self, pre: torch.Tensor, code: SparseCode, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations at ``code``'s entries, differentiable in the encoder."""
        if pre.requires_grad:
            return pre[code.rows, code.cols]
        return gather_preacts(pre, code, x, self.W_enc, self.b_enc)

    def _decode_acts(self, acts: Acts) -> torch.Tensor:
        """``acts @ W_dec`` without the bias, by the sparse or the dense path."""
        if isinstance(acts, SparseCode):
            if self.sparse:
                return decode_sparse(acts, self.W_dec)
            acts = acts.dense(self.cfg.n_latents)
        return acts @ self.W_dec

    def _aux_loss(self, x, x_hat, pre, dead) -> torch.Tensor:
        """AuxK: the top ``aux_k`` dead latents of each row reconstruct the residual."""
        if self.cfg.aux_k_coef == 0 or (x.device.type == "cpu" and not bool(dead.any())):
            # On CPU the check costs nothing; on GPU the masked form below avoids a sync
            # and gives the same exact zero.
            return x.new_zeros(())
        k_aux = min(self.cfg.aux_k or self.d_in // 2, self.cfg.n_latents)
        masked = pre.detach().masked_fill(~dead, float("-inf"))
        indices = masked.topk(k_aux, dim=1, sorted=False).indices
        if self.sparse:
            code = SparseCode.from_topk(indices)
            values = self._gather(pre, code, x).relu() * dead[code.cols]
            e_hat = self._decode_acts(code.with_values(values))
        else:
            values = pre.gather(1, indices).relu() * dead[indices]
            e_hat = self._decode_acts(dense_topk(pre, indices, values))
        residual = (x - x_hat).detach()
        return dead.any() * (e_hat - residual).pow(2).mean()

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component along each (unit) decoder row, so the step
        moves along the sphere (sparsify, Bricken et al. 2023)."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            # Row-wise dot products as a batched matmul: no (latents, d) temporary.
            along = torch.bmm(g.unsqueeze(1), w.unsqueeze(2)).view(-1, 1)
            g.addcmul_(w, along, value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fold_input_norm(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Rewrite the weights so the SAE trained on ``(x - mean) / scale`` takes raw ``x``.

        Codes are unchanged (pre-activations are identical), so thresholds stay valid.
        """
        self.b_enc -= self.W_enc @ mean / scale
        self.W_enc /= scale
        self.W_dec *= scale
        self.b_dec.mul_(scale).add_(mean)


def dense_topk(pre: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The dense (batch, latents) code with ``values`` at the per-row ``indices`` (both
    (batch, k)), zeros elsewhere; differentiable in ``values``."""
    return torch.zeros_like(pre).scatter(1, indices, values)


def _activity(acts: Acts, n_latents: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents fired in the batch, mean active latents per row)."""
    if isinstance(acts, SparseCode):
        active = acts.values.detach() > 0
        counts = torch.zeros(n_latents, device=active.device).index_add_(
            0, acts.cols, active.float())
        return counts > 0, active.sum() / acts.offsets.shape[0]
    # Codes are ≥ 0 in every variant, so column sums and signs give the same answer as
    # ``acts > 0`` reduced, without a (batch, latents) bool tensor (4-10× slower on CPU).
    codes = acts.detach()
    return codes.sum(0) > 0, torch.sign(codes).sum() / acts.shape[0]
