"""Training batches from an in-memory array or an activation store larger than memory.

The data order of epoch ``e`` is a pure function of ``(seed, e)``: blocks (Zarr chunks) are
permuted, grouped into windows of about ``shuffle_window_rows`` rows, and rows are permuted
inside each window; the batches are consecutive slices of that stream. So a batch index is
a complete data cursor: resuming at batch ``j`` recomputes the plan and reads from the window
holding row ``j·batch`` on, without touching the data before it. A thread reads, checks and
shuffles ahead of the trainer (zarr decompression and NumPy gathers release the GIL).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sparsealign.errors import fail


class ArraySource:
    """An (n, d) float array held in memory; shuffled whole."""

    def __init__(self, array: np.ndarray, name: str = "<activations>"):
        if not isinstance(array, np.ndarray) or array.ndim != 2 or 0 in array.shape:
            shape = getattr(array, "shape", type(array).__name__)
            raise fail(name, f"activations of shape {shape}", "a non-empty (n, d) array")
        if not np.issubdtype(array.dtype, np.number):
            raise fail(name, f"activations of dtype {array.dtype}", "a numeric dtype")
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise fail(name, f"{rows.size} rows have NaN or infinite activations "
                             f"(rows: {rows[:5].tolist()})", "finite values")
        self.name, self.array = name, array
        self.n_rows, self.d = array.shape
        self.block_rows = self.n_rows

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def check(self, rows: np.ndarray, start: int) -> None:
        """Already checked whole at construction."""

    def sample(self, max_rows: int) -> np.ndarray:
        """Evenly spaced rows, for input-normalisation statistics."""
        step = max(1, self.n_rows // max_rows)
        return np.asarray(self.array[::step][:max_rows], dtype=np.float64)


class StoreSource:
    """The ``responses`` of an activation store, read a Zarr chunk at a time."""

    def __init__(self, path):
        import zarr

        self.name = str(path)
        path = Path(path)
        if not path.exists():
            raise fail(path, "no such store", "an activation store written by sparsealign")
        try:
            self.array = zarr.open_group(path, mode="r")["responses"]
        except Exception as exc:  # zarr raises many types for a broken store
            raise fail(path, f"no readable 'responses' array ({type(exc).__name__}: {exc})",
                       "a Zarr v3 activation store") from None
        dims = tuple(self.array.metadata.dimension_names or ())
        if dims != ("stimulus", "unit"):
            raise fail(path, f"'responses' has dims {dims}", "('stimulus', 'unit')")
        if not np.issubdtype(self.array.dtype, np.number):
            raise fail(path, f"'responses' has dtype {self.array.dtype}", "a numeric dtype")
        self.n_rows, self.d = self.array.shape
        self.block_rows = self.array.chunks[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def check(self, rows: np.ndarray, start: int) -> None:
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            where = (start + np.flatnonzero(bad)[:5]).tolist()
            raise fail(self.name, f"NaN or infinite activations (stimulus positions {where} …)",
                       "finite values")

    def sample(self, max_rows: int) -> np.ndarray:
        """Whole blocks spread evenly over the store, up to ``max_rows`` rows."""
        n_blocks = -(-self.n_rows // self.block_rows)
        take = max(1, min(n_blocks, max_rows // self.block_rows))
        parts = []
        for b in np.linspace(0, n_blocks - 1, take).round().astype(int):
            part = self.read(b * self.block_rows, min(self.n_rows, (b + 1) * self.block_rows))
            self.check(part, b * self.block_rows)
            parts.append(part)
        return np.concatenate(parts)[:max_rows].astype(np.float64)


def as_source(data):
    """An ArraySource for a NumPy array, a StoreSource for a path."""
    if isinstance(data, (str, Path)):
        return StoreSource(data)
    return ArraySource(data)


class EpochPlan:
    """The row order of one epoch: windows of permuted blocks, rows permuted per window."""

    def __init__(self, n_rows: int, block_rows: int, window_rows: int, seed: int, epoch: int):
        self.seed, self.epoch = seed, epoch
        n_blocks = -(-n_rows // block_rows)
        per_window = max(1, window_rows // block_rows)
        order = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        self.windows = [[(b * block_rows, min(n_rows, (b + 1) * block_rows)) for b in group]
                        for group in np.array_split(order, -(-n_blocks // per_window))]
        sizes = [sum(stop - start for start, stop in w) for w in self.windows]
        self.starts = np.concatenate([[0], np.cumsum(sizes)])

    def permutation(self, w: int) -> np.ndarray:
        size = int(self.starts[w + 1] - self.starts[w])
        return np.random.default_rng([self.seed, self.epoch, w]).permutation(size)


def n_batches(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)


def iter_batches(source, batch_size: int, window_rows: int, seed: int, epoch: int,
                 start_batch: int = 0):
    """Yield the float32 (≤ batch_size, d) batches of ``epoch`` from batch ``start_batch`` on.

    The next window is read in the background while this one is served, so at most two
    windows are in memory and a window boundary does not stall the consumer.
    """
    plan = EpochPlan(source.n_rows, source.block_rows, window_rows, seed, epoch)
    start_row = start_batch * batch_size
    first = int(np.searchsorted(plan.starts, start_row, side="right") - 1)
    pending, n_pending = [], 0
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(_read_window, source, plan.windows[first]) \
            if first < len(plan.windows) else None
        for w in range(first, len(plan.windows)):
            data = upcoming.result()
            if w + 1 < len(plan.windows):
                upcoming = reader.submit(_read_window, source, plan.windows[w + 1])
            perm = plan.permutation(w)
            pos = start_row - int(plan.starts[w]) if w == first else 0
            while pos < perm.size:
                take = perm[pos:pos + batch_size - n_pending]
                pending.append(data[take])
                n_pending += take.size
                pos += take.size
                if n_pending == batch_size:
                    yield _join(pending)
                    pending, n_pending = [], 0
    if n_pending:
        yield _join(pending)


def _read_window(source, blocks) -> np.ndarray:
    parts = []
    for start, stop in blocks:
        parts.append(source.read(start, stop))
        source.check(parts[-1], start)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _join(parts):
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.ascontiguousarray(out, dtype=np.float32)


class Prefetcher:
    """Run a batch generator in a thread, ``depth`` batches ahead, as torch tensors.

    Pinned memory on CUDA lets the host-to-device copy overlap compute. Errors in the
    thread are re-raised in the consumer; ``close()`` stops the thread.
    """

    _DONE = object()

    def __init__(self, batches, depth: int = 4, pin: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches, pin), daemon=True)
        self._thread.start()

    def _run(self, batches, pin):
        try:
            for batch in batches:
                tensor = torch.from_numpy(batch)
                if pin:
                    tensor = tensor.pin_memory()
                if not self._put(tensor):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join()
