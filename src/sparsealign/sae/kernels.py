"""Sparse encoder/decoder kernels for the TopK family, with the plain dense form beside them.

A batch's active latents are a CSR pattern (:class:`SparseCode`): ``rows`` non-decreasing,
``cols`` the latent of each entry, ``offsets`` where each row starts. Only the forward
encoder product stays dense (top-k needs every pre-activation, and it is computed once,
without autograd); the decoder and both weight gradients cost O(batch·k·d) instead of
O(batch·latents·d), so no dense batch × latents tensor exists in the backward pass. The
dense form (``SparseCode.dense`` then a matmul) is the fallback and the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SparseCode(NamedTuple):
    """Active entries of a (batch, latents) code in CSR order."""

    rows: torch.Tensor      # (nnz,) int64, non-decreasing
    cols: torch.Tensor      # (nnz,) int64
    offsets: torch.Tensor   # (batch,) int64, start of each row in rows/cols
    values: torch.Tensor | None  # (nnz,) activations (carries autograd)

    @classmethod
    def from_topk(cls, indices: torch.Tensor) -> SparseCode:
        """The pattern of per-row (batch, k) indices; values are set by :meth:`with_values`."""
        batch, k = indices.shape
        device = indices.device
        rows = torch.arange(batch, device=device).repeat_interleave(k)
        offsets = torch.arange(0, batch * k, k, device=device)
        return cls(rows, indices.reshape(-1), offsets, None)

    @classmethod
    def from_flat(cls, flat_index: torch.Tensor, n_rows: int, n_cols: int) -> SparseCode:
        """The pattern of indices into the flattened (n_rows, n_cols) array, in any order."""
        flat_index = flat_index.sort().values
        rows, cols = flat_index // n_cols, flat_index % n_cols
        offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
        return cls(rows, cols, offsets, None)

    def with_values(self, values: torch.Tensor) -> SparseCode:
        return self._replace(values=values)

    def dense(self, n_cols: int) -> torch.Tensor:
        """The (batch, n_cols) dense code; differentiable in ``values``."""
        out = self.values.new_zeros(self.offsets.shape[0], n_cols)
        return out.index_put((self.rows, self.cols), self.values)


def scatter_rows(out_index: torch.Tensor, in_index: torch.Tensor, coef: torch.Tensor,
                 src: torch.Tensor, n_out: int) -> torch.Tensor:
    """``out[out_index[n]] += coef[n] * src[in_index[n]]`` for every entry n: (n_out, d)."""
    if src.device.type == "cpu":
        return scatter_rows_spmm(out_index, in_index, coef, src, n_out)
    return scatter_rows_index_add(out_index, in_index, coef, src, n_out)


def scatter_rows_spmm(out_index, in_index, coef, src, n_out):
    """As a sparse (n_out × len(src)) by dense product: no (nnz, d) gather is formed, several
    times faster than ``index_add_`` on CPU (on CUDA it would coalesce, a host sync)."""
    pattern = torch.sparse_coo_tensor(torch.stack([out_index, in_index]), coef.to(src.dtype),
                                      (n_out, src.shape[0]), check_invariants=False)
    return torch.sparse.mm(pattern, src)


def scatter_rows_index_add(out_index, in_index, coef, src, n_out):
    """The plain form (atomic adds on CUDA, no host sync)."""
    contributions = src[in_index] * coef.to(src.dtype).unsqueeze(1)
    return src.new_zeros(n_out, src.shape[1]).index_add_(0, out_index, contributions)


class _GatherPreacts(torch.autograd.Function):
    """values[n] = x[rows[n]] · W_enc[cols[n]] + b_enc[cols[n]], read from precomputed
    pre-activations; the backward scatters into the active encoder rows only."""

    @staticmethod
    def forward(ctx, pre, rows, cols, x, w_enc, b_enc):
        ctx.save_for_backward(rows, cols, x)
        ctx.n_latents = w_enc.shape[0]
        ctx.dtypes = (w_enc.dtype, b_enc.dtype)
        return pre[rows, cols]

    @staticmethod
    def backward(ctx, grad):
        rows, cols, x = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_w = scatter_rows(cols, rows, grad, x, ctx.n_latents)
        grad_b = grad.new_zeros(ctx.n_latents).index_add_(0, cols, grad)
        return None, None, None, None, grad_w.to(ctx.dtypes[0]), grad_b.to(ctx.dtypes[1])


def gather_preacts(pre: torch.Tensor, code: SparseCode, x: torch.Tensor,
                   w_enc: torch.Tensor, b_enc: torch.Tensor) -> torch.Tensor:
    """Pre-activations of the entries of ``code`` with gradients to ``w_enc``/``b_enc``.

    ``pre`` must be ``x @ w_enc.T + b_enc`` computed without autograd; ``x`` gets no gradient.
    """
    return _GatherPreacts.apply(pre.detach(), code.rows, code.cols, x.detach(), w_enc, b_enc)


def decode_sparse(code: SparseCode, w_dec: torch.Tensor) -> torch.Tensor:
    """Σ_n values[n]·W_dec[cols[n]] per row (no bias), via ``embedding_bag``."""
    return F.embedding_bag(code.cols, w_dec, code.offsets, mode="sum",
                           per_sample_weights=code.values.to(w_dec.dtype))
