"""Unit×unit Pearson correlations on every train/test split, streamed in column blocks.

One pass over the data serves all folds: the per-fold cross-products ``Z_kᵀ W_k`` are
computed once per block of target columns, and the *train* statistics of fold ``k`` are
the totals minus fold ``k``. Inputs are first standardised with whole-sample statistics,
which changes no split's correlation (Pearson r is invariant to per-unit affine maps) but
keeps the cross-products well conditioned in float32.

Policies (shared by every metric built on this module):

- a unit that is constant on a split (exactly: min == max) has r = 0 with everything on
  that split; metrics drop units constant on the *fit* split and count them;
- NaN or infinite input is an error (:func:`check_matrix`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from sparsealign.errors import fail

DEFAULT_MEMORY_BUDGET_MB = 1024


def check_matrix(x, name: str, min_rows: int = 4) -> np.ndarray:
    """Return ``x`` as a finite (stimulus, unit) matrix or raise SparsealignError.

    float32 input stays float32 (large stores need not double in memory); anything
    else becomes float64.
    """
    try:
        arr = np.asarray(x)
        arr = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    except (TypeError, ValueError):
        raise fail(name, f"not numeric (got {type(x).__name__})",
                   "a numeric (stimulus, unit) array") from None
    if arr.ndim != 2:
        raise fail(name, f"has shape {arr.shape}", "a 2-d (stimulus, unit) array")
    if arr.shape[1] == 0:
        raise fail(name, "has no units", "at least one unit")
    if arr.shape[0] < min_rows:
        raise fail(name, f"has {arr.shape[0]} stimuli",
                   f"at least {min_rows} for this metric")
    if np.isfinite(arr.sum()):  # one pass; NaN and inf propagate into the sum
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise fail(name, f"{rows.size} stimuli have NaN or infinite values "
                   f"(rows {rows[:5].tolist()}{' …' if rows.size > 5 else ''})", "finite values")
    return arr


def check_pair(source, target, min_rows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (source, target) pair whose rows are the same stimuli."""
    x = check_matrix(source, "source", min_rows)
    y = check_matrix(target, "target", min_rows)
    if x.shape[0] != y.shape[0]:
        raise fail("source vs target", f"{x.shape[0]} vs {y.shape[0]} stimuli",
                   "the same stimuli (rows) in both")
    return x, y


def check_budget(what: str, n_bytes: float, memory_budget_mb: float, advice: str) -> None:
    """Raise SparsealignError if ``what`` (``n_bytes``) exceeds the memory budget."""
    if n_bytes / 2**20 > memory_budget_mb:
        raise fail("align", f"{what} need {n_bytes / 2**20:.0f} MiB",
                   f"at most memory_budget_mb={memory_budget_mb:g}; {advice} or raise "
                   "the budget")


def constant_on_splits(x: np.ndarray, fold_of: np.ndarray | None, chunk_columns: int = 256):
    """Flag units that are constant (min == max) on each split.

    Returns ``(on_fit, on_eval)``, boolean arrays of shape (n_folds, n_units): ``on_fit[k]``
    for the training rows of fold ``k`` (all rows when ``fold_of`` is None) and
    ``on_eval[k]`` for its test rows (again all rows in-sample). Reads ``x`` in column
    chunks, so it never copies more than ``n × chunk_columns`` values.
    """
    order, rows = fold_order(fold_of, x.shape[0])
    lo = np.empty((len(rows), x.shape[1]))
    hi = np.empty_like(lo)
    for start in range(0, x.shape[1], chunk_columns):
        chunk = x[order, start:start + chunk_columns]
        for k, (a, b) in enumerate(rows):
            lo[k, start:start + chunk_columns] = chunk[a:b].min(axis=0)
            hi[k, start:start + chunk_columns] = chunk[a:b].max(axis=0)
    on_eval = lo == hi
    if fold_of is None:
        return on_eval, on_eval
    others = ~np.eye(len(rows), dtype=bool)
    return np.stack([lo[m].min(axis=0) == hi[m].max(axis=0) for m in others]), on_eval


class _Backend:
    """The few array operations that differ between NumPy and torch.

    ``device`` "cpu" is NumPy; anything else is a torch device ("cuda", "cuda:1", or
    "torch:cpu" to run the torch path without a GPU). TF32 is switched off for torch so
    float32 products accumulate in float32.
    """

    def __init__(self, device: str):
        self.device = device
        if device == "cpu":
            self.xp = np
            return
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.xp = torch
        self.torch_device = device.removeprefix("torch:")

    def asarray(self, x, dtype):
        if self.xp is np:
            return np.ascontiguousarray(x, dtype=dtype)
        return self.xp.as_tensor(np.ascontiguousarray(x), device=self.torch_device,
                                 dtype=getattr(self.xp, np.dtype(dtype).name))

    def like(self, values, ref):
        """``values`` as an array with the dtype and device of ``ref``."""
        if self.xp is np:
            return np.asarray(values, dtype=ref.dtype)
        return self.xp.as_tensor(np.asarray(values), dtype=ref.dtype, device=ref.device)

    def to_numpy(self, x) -> np.ndarray:
        return x if self.xp is np else x.detach().cpu().numpy()

    def take_along(self, x, idx, axis: int):
        if self.xp is np:
            return np.take_along_axis(x, idx, axis)
        return self.xp.take_along_dim(x, idx, axis)

    def empty(self, shape, dtype):
        if self.xp is np:
            return np.empty(shape, dtype=dtype)
        return self.xp.empty(shape, device=self.torch_device,
                             dtype=getattr(self.xp, np.dtype(dtype).name))

    def full(self, shape, value, dtype):
        if self.xp is np:
            return np.full(shape, value, dtype=dtype)
        return self.xp.full(shape, value, device=self.torch_device,
                            dtype=getattr(self.xp, np.dtype(dtype).name))

    def fill_where(self, x, where, value) -> None:
        """In place: ``x[where] = value`` with ``where`` broadcast to ``x``."""
        if self.xp is np:
            np.copyto(x, value, where=where)
        else:
            x.masked_fill_(where, value)


GPU_MIN_WORK = 1e9
"""Below this many multiply-adds, device="auto" stays on the CPU (transfers would dominate)."""


def resolve_device(device: str | None, work: float = np.inf) -> str:
    """``None``/"auto" → "cuda" when torch sees a GPU and ``work`` ≥ :data:`GPU_MIN_WORK`,
    else "cpu" (NumPy; torch is then not even imported).

    Any other value is kept: "cpu" (NumPy) or a torch device such as "cuda:1"; the
    prefix "torch:" (e.g. "torch:cpu") forces the torch path on that device.
    """
    if device not in (None, "auto"):
        return device
    if work < GPU_MIN_WORK or not _gpu_driver():
        return "cpu"
    try:
        import torch
    except ImportError:  # torch is a dependency, but the CPU path must not need it
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_driver() -> bool:
    """False when no GPU driver is loaded (Linux: no NVIDIA, ROCm or WSL GPU driver files),
    so that "auto" need not import torch (1.4 s) to learn there is no GPU; True when unsure."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd",
                                           "/dev/dxg"))


def working_precision(precision: str, device: str, work: float) -> str:
    """"auto" → float64 on the NumPy path for ≤ 1e10 multiply-adds, else float32."""
    if precision == "auto":
        return "float64" if device == "cpu" and work <= 1e10 else "float32"
    if precision not in ("float32", "float64"):
        raise fail("align.precision", repr(precision), '"float32", "float64" or "auto"')
    return precision


@dataclass
class Folded:
    """Rows grouped by test fold; columns standardised on all rows, on the backend.

    ``z = (x − mean) / scale`` (scale 1 for constant columns) in the working precision.
    Whole-sample standardisation changes no split's correlation or regression fit after
    that split's own standardisation; it only keeps float32 sums well conditioned.
    ``rows[k] = (a, b)``: fold k's rows of ``z``. In-sample there is one "fold" holding
    every row, which is both the fit and the evaluation split.
    """

    z: object
    mean: np.ndarray
    scale: np.ndarray
    rows: list
    in_sample: bool

    @property
    def n_folds(self) -> int:
        return len(self.rows)


def fold_order(fold_of, n: int):
    """``(order, rows)``: a row order grouping stimuli by fold, and each fold's [a, b)."""
    folds = np.zeros(n, dtype=np.int64) if fold_of is None else np.asarray(fold_of)
    order = np.argsort(folds, kind="stable")
    edges = np.searchsorted(folds[order], np.arange(folds.max() + 2))
    return order, [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def fold_data(x: np.ndarray, fold_of, backend: _Backend, precision: str) -> Folded:
    """Standardise ``x`` on all rows, group its rows by fold, move it to the backend."""
    order, rows = fold_order(fold_of, x.shape[0])
    z = x[order].astype(np.result_type(x.dtype, precision), copy=False)
    mean = z.mean(axis=0)
    z -= mean
    scale = np.sqrt(np.einsum("ij,ij->j", z, z) / z.shape[0])
    scale = np.where(scale > 0, scale, 1.0)
    z /= scale
    return Folded(backend.asarray(z, precision), mean, scale, rows, fold_of is None)


@dataclass
class SplitSums:
    """Sums over one split's rows: count, Σx, Σx², Σy, Σy² (per unit) and Σxyᵀ."""

    count: int
    sx: object
    ssx: object
    sy: object
    ssy: object
    cross: object

    def pearson(self, in_place: bool = False):
        """Pearson r (p, q); with ``in_place`` it overwrites ``self.cross``.

        Pairs with a zero-variance unit come out finite; the constant-unit flags zero
        them. One (p, q) temporary is allocated besides the result.
        """
        vx = self.ssx - self.sx * self.sx / self.count
        vy = self.ssy - self.sy * self.sy / self.count
        inv_x = 1.0 / (vx * (vx > 0) + (vx <= 0)) ** 0.5
        inv_y = 1.0 / (vy * (vy > 0) + (vy <= 0)) ** 0.5
        out = self.sx[:, None] * (-self.sy[None, :] / self.count)
        if in_place:
            self.cross += out
            out = self.cross
        else:
            out += self.cross
        out *= inv_x[:, None]
        out *= inv_y[None, :]
        return out

    def means(self):
        return self.sx / self.count, self.sy / self.count

    def centred_cross(self, mx=None, my=None):
        """Σ (x − mx)(y − my)ᵀ over the split; the split's own means by default."""
        if mx is None:
            mx, my = self.means()
        return (self.cross - self.sx[:, None] * my[None, :] - mx[:, None] * self.sy[None, :]
                + self.count * mx[:, None] * my[None, :])

    def centred_squares(self, mx=None, my=None):
        """Per-unit Σ (x − mx)² and Σ (y − my)² over the split."""
        if mx is None:
            mx, my = self.means()
        return (self.ssx - 2 * mx * self.sx + self.count * mx * mx,
                self.ssy - 2 * my * self.sy + self.count * my * my)


@dataclass
class FoldSums:
    """Per-fold sums of two folded matrices; fit split k = all folds but k."""

    counts: list
    sx: object
    ssx: object
    sy: object
    ssy: object
    cross: object
    in_sample: bool

    def __post_init__(self):
        self._totals = [t.sum(axis=0) for t in (self.sx, self.ssx, self.sy, self.ssy,
                                                self.cross)]

    def eval(self, k: int) -> SplitSums:
        return SplitSums(self.counts[k], self.sx[k], self.ssx[k], self.sy[k], self.ssy[k],
                         self.cross[k])

    def fit(self, k: int) -> SplitSums:
        if self.in_sample:
            return self.eval(k)
        parts = (self.sx, self.ssx, self.sy, self.ssy, self.cross)
        return SplitSums(sum(self.counts) - self.counts[k],
                         *(total - part[k] for total, part in zip(self._totals, parts)))


def fold_sums(a: Folded, b: Folded, xp) -> FoldSums:
    """Sums of ``a.z`` and ``b.z`` per fold, in one pass (``xp`` = np or torch)."""
    rows = a.rows
    w = b.z
    cross = xp.empty((len(rows), a.z.shape[1], w.shape[1]), dtype=a.z.dtype,
                     **({} if xp is np else {"device": a.z.device}))
    for k, (lo, hi) in enumerate(rows):
        xp.matmul(a.z[lo:hi].T, w[lo:hi], out=cross[k])
    return FoldSums(
        [hi - lo for lo, hi in rows],
        xp.stack([a.z[lo:hi].sum(axis=0) for lo, hi in rows]),
        xp.stack([(a.z[lo:hi] ** 2).sum(axis=0) for lo, hi in rows]),
        xp.stack([w[lo:hi].sum(axis=0) for lo, hi in rows]),
        xp.stack([(w[lo:hi] ** 2).sum(axis=0) for lo, hi in rows]),
        cross, a.in_sample)


@dataclass
class SplitCorrelations:
    """Pearson correlations between every source and target unit on every split.

    Attributes
    ----------
    source_fit_ok, target_fit_ok : (n_folds, p) and (n_folds, q) bool
        Units that vary on the fit split of each fold (the others are dropped).
    source_eval_ok, target_eval_ok : same shapes
        Units that vary on the test split (the others correlate 0 there).
    precision : str
        Floating type of the cross-products ("float32" or "float64").
    device : str
        "cpu" (NumPy) or a torch device.
    block_columns : int
        Target columns per streamed block (set by the memory budget).
    """

    source_fit_ok: np.ndarray
    target_fit_ok: np.ndarray
    source_eval_ok: np.ndarray
    target_eval_ok: np.ndarray
    precision: str
    device: str
    block_columns: int
    _source: Folded
    _target: np.ndarray
    _fold_of: object

    @property
    def n_folds(self) -> int:
        return self.source_fit_ok.shape[0]

    @property
    def backend(self) -> _Backend:
        return _Backend(self.device)

    def blocks(self):
        """Yield ``(start, stop, r_fit, r_eval)`` per block of target columns.

        ``r_fit`` and ``r_eval`` are backend arrays of shape (n_folds, p, stop − start):
        correlations on the training rows and on the test rows of each fold (the same
        array twice in-sample). Pairs with a unit constant on that split are 0. The
        consumer may modify them in place and should drop its references before
        asking for the next block, so that two blocks never coexist.
        """
        be = self.backend
        p, q = self.source_fit_ok.shape[1], self._target.shape[1]
        for start in range(0, q, self.block_columns):
            stop = min(q, start + self.block_columns)
            block = fold_data(self._target[:, start:stop], self._fold_of, be, self.precision)
            sums = fold_sums(self._source, block, be.xp)
            del block
            r_fit = be.empty((self.n_folds, p, stop - start), self.precision)
            for k in range(self.n_folds):
                r_fit[k] = sums.fit(k).pearson(in_place=True)  # on fit(k)'s own temporary
            self._zero_constant(be, r_fit, self.source_fit_ok, self.target_fit_ok, start, stop)
            if self._source.in_sample:
                yield start, stop, r_fit, r_fit
                del r_fit  # before the next block is allocated
                continue
            r_eval = sums.cross  # each fold's cross-product becomes its correlations
            for k in range(self.n_folds):
                sums.eval(k).pearson(in_place=True)
            del sums
            self._zero_constant(be, r_eval, self.source_eval_ok, self.target_eval_ok,
                                start, stop)
            yield start, stop, r_fit, r_eval
            del r_fit, r_eval  # before the next block is allocated

    def _zero_constant(self, be, r, source_ok, target_ok, start, stop):
        """In place: r = 0 for pairs with a unit constant on that split (skipped if none)."""
        if not source_ok.all():
            r *= be.asarray(source_ok[:, :, None], self.precision)
        if not target_ok[:, start:stop].all():
            r *= be.asarray(target_ok[:, None, start:stop], self.precision)

    def full(self, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB):
        """All correlations at once as NumPy arrays ``(r_fit, r_eval)``, (n_folds, p, q).

        Raises SparsealignError when they would exceed ``memory_budget_mb``.
        """
        k, p = self.source_fit_ok.shape
        q = self.target_fit_ok.shape[1]
        check_budget(f"the full {p}×{q} correlation matrices on {k} folds",
                     2 * k * p * q * 8, memory_budget_mb, "use semi_matching (streamed)")
        be = self.backend
        r_fit = np.empty((k, p, q))
        r_eval = np.empty((k, p, q))
        for start, stop, f, e in self.blocks():
            r_fit[:, :, start:stop] = be.to_numpy(f)
            r_eval[:, :, start:stop] = be.to_numpy(e)
            del f, e
        return r_fit, r_eval


def split_correlations(source: np.ndarray, target: np.ndarray, fold_of=None, *,
                       memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                       device: str | None = "auto", precision: str = "auto") -> SplitCorrelations:
    """Prepare streamed split correlations between the columns of two matrices.

    Parameters
    ----------
    source, target : (n, p) and (n, q) finite arrays, rows are the same stimuli.
    fold_of : (n,) int array or None
        Test fold of every stimulus (0 … n_folds − 1); fit split k = all other folds.
        None: one in-sample split (fit = eval = all stimuli).
    memory_budget_mb : float
        Bound on the working set of one block (the target block, per-fold cross-products
        and correlations); the inputs and one standardised copy of ``source`` come on top.
    device : "auto" (CUDA for large problems when present, else NumPy), "cpu" (NumPy),
        "cuda[:i]" (torch, TF32 off) or "torch:<dev>"; see :func:`resolve_device`.
    precision : "float32", "float64" or "auto" (see :func:`working_precision`);
        accumulation is in the working precision, never TF32.
    """
    n, p = source.shape
    q = target.shape[1]
    device = resolve_device(device, n * p * q)
    precision = working_precision(precision, device, n * p * q)
    be = _Backend(device)
    src_fit_c, src_eval_c = constant_on_splits(source, fold_of)
    tgt_fit_c, tgt_eval_c = constant_on_splits(target, fold_of)
    folded = fold_data(source, fold_of, be, precision)
    # Per target column: its values reordered and standardised (two copies), per fold
    # the cross-product (which becomes r_eval) and r_fit, their total, two temporaries
    # and one spare for the consumer's small per-block arrays.
    per_column = np.dtype(precision).itemsize * (2 * n + (2 * folded.n_folds + 4) * p)
    block = int(max(1, min(q, memory_budget_mb * 2**20 // per_column)))
    return SplitCorrelations(
        source_fit_ok=~src_fit_c, target_fit_ok=~tgt_fit_c, source_eval_ok=~src_eval_c,
        target_eval_ok=~tgt_eval_c, precision=precision, device=device,
        block_columns=block, _source=folded, _target=target, _fold_of=fold_of)


def correlate(a, b, **options) -> np.ndarray:
    """In-sample Pearson correlation matrix (p, q) between the columns of ``a`` and ``b``.

    Constant columns correlate 0 with everything. ``options`` as for
    :func:`split_correlations`.
    """
    x, y = check_pair(a, b, min_rows=2)
    budget = options.pop("memory_budget_mb", DEFAULT_MEMORY_BUDGET_MB)
    r_fit, _ = split_correlations(x, y, None, memory_budget_mb=budget, **options).full(budget)
    return r_fit[0]
