"""Training batches from an in-memory array or an activation store larger than memory.

A store is either an activations store (dims ``("stimulus", "unit")``, one row per
stimulus) or a training-rows store of :func:`sparsealign.extract.extract_network` (dims
``("row", "unit")``, one row per (image, position), usually float16); rows are read as
float32. A source may use a subset of the store's rows (``rows=``, sorted indices, e.g.
from :func:`select_rows`); the source then behaves as the store of those rows only.

The data order of epoch ``e`` is a pure function of ``(seed, e)`` and the rows used: blocks
(the used rows of one Zarr chunk) are permuted, grouped into windows of about
``shuffle_window_rows`` rows, and rows are permuted inside each window; the batches are
consecutive slices of that stream. So a batch index is a complete data cursor: resuming at
batch ``j`` recomputes the plan and reads from the window holding row ``j·batch`` on,
without touching the data before it. A thread reads, checks and shuffles ahead of the
trainer (zarr decompression and NumPy gathers release the GIL).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sparsealign.errors import fail


def _check_rows(rows, n_total: int, name: str) -> np.ndarray:
    """``rows`` as sorted, unique, in-range int64 indices (at least one)."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise fail(name, f"a row subset of shape {rows.shape} and dtype {rows.dtype}",
                   "a non-empty 1-d array of row indices")
    rows = rows.astype(np.int64)
    if rows[0] < 0 or rows[-1] >= n_total or (rows.size > 1 and (np.diff(rows) <= 0).any()):
        raise fail(name, "row subset not sorted, unique and within the store",
                   f"increasing indices in 0 … {n_total - 1}")
    return rows


class ArraySource:
    """An (n, d) float array held in memory (or the ``rows`` of it); shuffled whole."""

    def __init__(self, array: np.ndarray, name: str = "<activations>",
                 rows: np.ndarray | None = None):
        if not isinstance(array, np.ndarray) or array.ndim != 2 or 0 in array.shape:
            shape = getattr(array, "shape", type(array).__name__)
            raise fail(name, f"activations of shape {shape}", "a non-empty (n, d) array")
        if not np.issubdtype(array.dtype, np.number):
            raise fail(name, f"activations of dtype {array.dtype}", "a numeric dtype")
        self.rows = None if rows is None else _check_rows(rows, len(array), name)
        if self.rows is not None:
            array = array[self.rows]
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise fail(name, f"{rows.size} rows have NaN or infinite activations "
                             f"(rows: {rows[:5].tolist()})", "finite values")
        self.name, self.array = name, array
        self.n_rows, self.d = array.shape
        self.block_rows = self.n_rows
        self.blocks = [(0, self.n_rows)]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def check(self, rows: np.ndarray, start: int) -> None:
        """Already checked whole at construction."""

    def sample(self, max_rows: int) -> np.ndarray:
        """Evenly spaced rows, for input-normalisation statistics."""
        step = max(1, self.n_rows // max_rows)
        return np.asarray(self.array[::step][:max_rows], dtype=np.float64)


#: Dims of the ``responses`` of the stores a StoreSource reads.
STORE_DIMS = (("stimulus", "unit"), ("row", "unit"))


class StoreSource:
    """The ``responses`` of an activations or rows store, read a Zarr chunk at a time.

    Parameters
    ----------
    path : an activations store (``("stimulus", "unit")``) or a training-rows store
        (``("row", "unit")``, :func:`sparsealign.extract.extract_network`).
    rows : sorted indices of the store rows to use (e.g. from :func:`select_rows`);
        None = all. Row ``i`` of the source is store row ``rows[i]``.

    ``blocks`` are the (start, stop) source rows of each Zarr chunk holding used rows;
    ``block_rows`` is the largest.
    """

    def __init__(self, path, rows: np.ndarray | None = None):
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
        if dims not in STORE_DIMS:
            raise fail(path, f"'responses' has dims {dims}", " or ".join(map(str, STORE_DIMS)))
        self.row_dim = dims[0]
        if not np.issubdtype(self.array.dtype, np.number):
            raise fail(path, f"'responses' has dtype {self.array.dtype}", "a numeric dtype")
        n_total, self.d = self.array.shape
        chunk = self.array.chunks[0]
        self.rows = None if rows is None else _check_rows(rows, n_total, f"{path} (rows)")
        if self.rows is None:
            self.n_rows = n_total
            self.blocks = [(start, min(n_total, start + chunk))
                           for start in range(0, n_total, chunk)]
        else:
            self.n_rows = self.rows.size
            edges = np.flatnonzero(np.diff(self.rows // chunk)) + 1
            bounds = np.concatenate([[0], edges, [self.n_rows]]).tolist()
            self.blocks = list(zip(bounds[:-1], bounds[1:]))
        self.block_rows = max(stop - start for start, stop in self.blocks)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Source rows ``start:stop`` as float32."""
        if self.rows is None:
            return np.asarray(self.array[start:stop], dtype=np.float32)
        wanted = self.rows[start:stop]
        if wanted.size == 0:
            return np.empty((0, self.d), dtype=np.float32)
        first = int(wanted[0])
        dense = self.array[first:int(wanted[-1]) + 1]
        return np.asarray(dense[wanted - first], dtype=np.float32)

    def store_rows(self, start: int, stop: int) -> np.ndarray:
        """The store row indices of source rows ``start:stop``."""
        return np.arange(start, stop) if self.rows is None else self.rows[start:stop]

    def check(self, rows: np.ndarray, start: int) -> None:
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            where = self.store_rows(start, start + len(rows))[np.flatnonzero(bad)[:5]].tolist()
            raise fail(self.name, f"NaN or infinite activations ({self.row_dim} positions "
                                  f"{where} …)", "finite values")

    def sample(self, max_rows: int) -> np.ndarray:
        """Whole blocks spread evenly over the store, up to ``max_rows`` rows."""
        take = max(1, min(len(self.blocks), max_rows // self.block_rows))
        parts = []
        for b in np.linspace(0, len(self.blocks) - 1, take).round().astype(int):
            start, stop = self.blocks[b]
            part = self.read(start, stop)
            self.check(part, start)
            parts.append(part)
        return np.concatenate(parts)[:max_rows].astype(np.float64)


def as_source(data, rows: np.ndarray | None = None):
    """An ArraySource for a NumPy array, a StoreSource for a path; a source as it is.

    ``rows`` selects a subset of the rows (sorted indices); not with a source.
    """
    if isinstance(data, (ArraySource, StoreSource)):
        if rows is not None:
            raise fail(data.name, "rows given for a source", "rows given to the source itself")
        return data
    if isinstance(data, (str, Path)):
        return StoreSource(data, rows=rows)
    return ArraySource(data, rows=rows)


def _row_image_index(path) -> tuple[np.ndarray, np.ndarray]:
    """``(image ids, image index of each row)`` of a rows store (or an activations store,
    where each stimulus is its own image)."""
    import zarr

    try:
        group = zarr.open_group(Path(path), mode="r")
        if "image_index" in group:
            image_ids, image_index = group["image"][:], group["image_index"][:]
        else:
            image_ids = group["stimulus"][:]
            image_index = np.arange(image_ids.size)
    except Exception as exc:  # zarr raises many types for a missing or broken store
        raise fail(path, f"no readable image ids ({type(exc).__name__}: {exc})",
                   "a rows store or an activations store") from None
    return np.asarray(image_ids, dtype=object).astype(str), image_index


def row_images(path) -> np.ndarray:
    """The image ids a rows store holds rows of (str array, store order)."""
    return _row_image_index(path)[0]


def select_rows(path, exclude_images=(), fraction: float = 1.0, seed: int = 0,
                only_images=None) -> np.ndarray:
    """Sorted indices of the rows of a store to train (or evaluate) an SAE on.

    Parameters
    ----------
    path : a rows store (rows of ``image``) or an activations store (each stimulus is its
        own image).
    exclude_images : image ids whose rows are left out (e.g. the scoring stimuli, or a
        held-out set); ids not in the store are ignored.
    fraction : keep this fraction (0 < f ≤ 1) of the remaining rows, drawn with ``seed``.
        For one seed the kept rows are nested: the 25 % subset lies inside the 50 % one.
    seed : seeds the draw.
    only_images : if given, only the rows of these image ids (all must be in the store).

    Returns
    -------
    numpy.ndarray of int64, sorted, for ``StoreSource(path, rows=...)``.

    Examples
    --------
    Train on the rows of every image but the held-out ones, evaluate on those:

    >>> train = select_rows(path, exclude_images=held_out, fraction=0.5, seed=0)
    >>> test = select_rows(path, only_images=held_out)
    """
    if not 0 < fraction <= 1:
        raise fail("fraction", f"{fraction!r}", "0 < fraction <= 1")
    image_ids, image_index = _row_image_index(path)
    keep = ~np.isin(image_ids, np.asarray(list(exclude_images), dtype=str))
    if only_images is not None:
        only = np.asarray(list(only_images), dtype=str)
        unknown = only[~np.isin(only, image_ids)]
        if unknown.size:
            raise fail(path, f"{unknown.size} of the only_images are not in the store "
                             f"({unknown[:3].tolist()} …)", "ids of the store's images")
        keep &= np.isin(image_ids, only)
    candidates = np.flatnonzero(keep[image_index])
    n_keep = int(round(fraction * candidates.size))
    if n_keep < 1:
        raise fail(path, f"no rows left ({candidates.size} rows after exclusion, fraction "
                         f"{fraction})", "at least one row")
    order = np.random.default_rng(seed).permutation(candidates.size)[:n_keep]
    return np.sort(candidates[order]).astype(np.int64)


class EpochPlan:
    """The row order of one epoch: windows of permuted blocks, rows permuted per window.

    ``blocks`` are (start, stop) row ranges (one per Zarr chunk; None = consecutive blocks
    of ``block_rows``), ``block_rows`` the largest; a window holds
    ``max(1, window_rows // block_rows)`` blocks.
    """

    def __init__(self, n_rows: int, block_rows: int, window_rows: int, seed: int, epoch: int,
                 blocks: list | None = None):
        self.seed, self.epoch = seed, epoch
        if blocks is None:
            blocks = [(start, min(n_rows, start + block_rows))
                      for start in range(0, n_rows, block_rows)]
        per_window = max(1, window_rows // block_rows)
        order = np.random.default_rng([seed, epoch]).permutation(len(blocks))
        self.windows = [[blocks[b] for b in group]
                        for group in np.array_split(order, -(-len(blocks) // per_window))]
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

    The next window is read in the background while this one is served, so a window
    boundary does not stall the consumer. A store's window is also shuffled there, as one
    gather, so that batches are slices of it (views: nothing is left to do per batch on
    the consumer's thread); at most two windows are held, and a third for the moment of
    that gather. An in-memory array (one window, the array itself) is not copied: each
    batch is gathered from it.
    """
    plan = EpochPlan(source.n_rows, source.block_rows, window_rows, seed, epoch,
                     source.blocks)
    start_row = start_batch * batch_size
    first = int(np.searchsorted(plan.starts, start_row, side="right") - 1)
    shuffle_on_read = not isinstance(source, ArraySource)
    pending, n_pending = [], 0
    with ThreadPoolExecutor(max_workers=1) as reader:
        def submit(w):
            perm = plan.permutation(w) if shuffle_on_read else None
            return reader.submit(_read_window, source, plan.windows[w], perm)

        upcoming = submit(first) if first < len(plan.windows) else None
        for w in range(first, len(plan.windows)):
            data = upcoming.result()
            if w + 1 < len(plan.windows):
                upcoming = submit(w + 1)
            perm = None if shuffle_on_read else plan.permutation(w)
            pos = start_row - int(plan.starts[w]) if w == first else 0
            while pos < len(data):
                stop = min(len(data), pos + batch_size - n_pending)
                pending.append(data[pos:stop] if perm is None else
                               np.take(data, perm[pos:stop], axis=0))  # 3x data[perm[...]]
                n_pending += stop - pos
                pos = stop
                if n_pending == batch_size:
                    yield _join(pending)
                    pending, n_pending = [], 0
    if n_pending:
        yield _join(pending)


def _read_window(source, blocks, perm: np.ndarray | None = None) -> np.ndarray:
    """The rows of ``blocks``, checked; in the order ``perm`` when given."""
    parts = []
    for start, stop in blocks:
        parts.append(source.read(start, stop))
        source.check(parts[-1], start)
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return data if perm is None else np.take(data, perm, axis=0)


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
