"""Activations of named layers of any ``torch.nn.Module`` → one activations store per layer.

Forward hooks capture each requested module's output batch by batch under
``torch.no_grad``; each output of shape (N, C, *spatial) is reduced to (N, units):

- ``"center"``: the C channels at the centre position (index ``size // 2`` on every
  spatial axis), i.e. units with a common receptive field, as in Longon et al. (2025);
- ``"mean"``: the C channels averaged over all spatial positions;
- ``"flatten"``: all C × spatial values, in (C, *spatial) order.

Outputs of shape (N, C) are kept as they are. Units are named ``<layer>/<index:05d>``.
A hooked module must run once per forward pass: one that runs twice (a ReLU reused
inside a block) is ambiguous and an error; hook a module that runs once instead.

:func:`extract_network` also writes the SAE *training rows* of each layer: one row per
(image, spatial position) — optionally a seeded subsample of positions per image and the
horizontally flipped image too — streamed to ``<layer>.rows.zarr`` while the network runs.
Scoring uses one vector per stimulus (the store above); an SAE trains on the rows.

A rows store is a Zarr v3 group that ``xarray.open_zarr`` reads:

- ``responses`` (row, unit), float16 (or float32), chunked (``chunk_rows``, all units);
- on ``row``: ``image_index`` (int, into ``image``), ``position`` (int, the flat spatial
  index, row-major over the output's spatial axes; 0 for a (N, C) output) and ``flipped``
  (bool);
- ``image`` (the stimulus ids) and ``unit`` (``<layer>/<index:05d>``, as in the scoring
  store): string coords;
- attrs ``source``, ``layer``, ``kind="training_rows"``, ``module``, ``output_shape``,
  ``positions`` (the setting), ``positions_per_image``, ``flips``, ``seed``,
  ``created_by`` and ``config_sha`` (as :mod:`sparsealign.schema` stores record them).

Rows come image by image, in stimulus order: an image's positions ascending, then (with
flips) its flipped image's. The whole layout is a function of the inputs and the seed.
"""

from __future__ import annotations

import contextlib
import functools
import math
import queue
import threading
from pathlib import Path

import numpy as np

from sparsealign import schema
from sparsealign.atomic import atomic_path
from sparsealign.errors import fail

REDUCTIONS = ("center", "mean", "flatten")
#: Settings of the training rows (``rows=`` of :func:`extract_network`) and their defaults.
ROWS_DEFAULTS = {"positions": None, "flips": False, "seed": 0, "dtype": "float16",
                 "chunk_rows": 16384}
ROWS_DTYPES = ("float16", "float32")


class _LayersDone(Exception):
    """Raised by the last hook of a pass with ``stop_early``: the rest is not needed."""


def reduce_activation(output, reduction: str):
    """Reduce a (N, C, *spatial) tensor to (N, units); (N, C) passes through.

    Parameters
    ----------
    output : torch.Tensor
    reduction : {"center", "mean", "flatten"}
    """
    if output.ndim == 2:
        return output
    if reduction == "center":
        centre = (slice(None), slice(None)) + tuple(size // 2 for size in output.shape[2:])
        return output[centre]
    if reduction == "mean":
        return output.mean(dim=tuple(range(2, output.ndim)))
    if reduction == "flatten":
        return output.flatten(1)
    raise fail("reduction", f"unknown reduction {reduction!r}", f"one of {REDUCTIONS}")


def scoring_vectors(output, reduction: str):
    """:func:`reduce_activation` of one batch as a float32 CPU copy of its own.

    A centre position is a view of the whole output; kept as it is, every batch's full
    feature maps would stay in memory until the store is written (24 GB by 3,000 VGG16
    images at 112 px).
    """
    import torch

    return reduce_activation(output, reduction).to("cpu", torch.float32, copy=True)


def resolve_layers(model, layers: dict[str, str]) -> dict:
    """Friendly layer name → the module at its dotted path in ``model``."""
    modules = dict(model.named_modules())
    resolved = {}
    for name, path in layers.items():
        if path not in modules:
            options = [n for n in modules if n][:12]
            raise fail(f"layer {name!r}", f"no module {path!r} in {type(model).__name__}",
                       f"a dotted module path such as {options}")
        resolved[name] = modules[path]
    return resolved


class _Capture:
    """Forward hooks on the requested modules of ``model``: the one hook of this module.

    Inside ``with``, the model is in eval mode (its mode is restored on exit) and
    :meth:`run` does one forward pass under ``torch.no_grad``, handing each hooked output to
    ``take(name, output)`` as soon as it is computed (so no full output outlives its hook)
    and returning ``{name: what take returned}``. With ``stop_early`` the pass stops once
    every requested module has run (the rest of the network is not computed).
    """

    def __init__(self, model, layers: dict[str, str], stop_early: bool):
        self.model, self.layers, self.stop_early = model, layers, stop_early
        self.modules = resolve_layers(model, layers)
        self.shapes: dict[str, tuple] = {}   # name → output shape without the batch axis
        self._captured: dict = {}
        self._take = None

    def __enter__(self):
        import torch

        parameter = next(self.model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self._handles = [module.register_forward_hook(self._hook_for(name))
                         for name, module in self.modules.items()]
        self._was_training = self.model.training
        self.model.eval()
        # Convolutions run 1.4× faster on CPU in channels-last layout (oneDNN), and use the
        # tensor cores on GPU; the model's own layout is restored on exit.
        self.channels_last = any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        return self

    def __exit__(self, *exc):
        import torch

        for handle in self._handles:
            handle.remove()
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        self.model.train(self._was_training)

    def _hook_for(self, name):
        import torch

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise fail(f"layer {name!r}", f"module {self.layers[name]!r} returns "
                                              f"{type(output).__name__}", "a tensor")
            if name in self._captured:
                raise fail(f"layer {name!r}", f"module {self.layers[name]!r} runs more than "
                                              "once per forward pass", "a module that runs once")
            self.shapes[name] = tuple(output.shape[1:])
            self._captured[name] = self._take(name, output)
            if self.stop_early and len(self._captured) == len(self.layers):
                raise _LayersDone
        return hook

    def run(self, inputs, take) -> dict:
        """One forward pass of the batch ``inputs`` (moved to the model's device)."""
        import torch

        self._captured, self._take = {}, take
        inputs = inputs.to(self.device)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            try:
                self.model(inputs)
            except _LayersDone:
                pass
        for name in self.layers:
            if name not in self._captured:
                raise fail(f"layer {name!r}", f"module {self.layers[name]!r} did not run "
                                              "in the forward pass", "a module on the path")
        captured, self._captured = self._captured, {}
        return captured


def _release_freed_memory() -> None:
    """Hand the heap's free memory back to the OS (glibc; elsewhere nothing to do).

    A batch frees feature maps of every size; glibc keeps freed heap memory, and with the
    channels-last layout its heap grew by about 2 MB per VGG16 image (20 GB over the
    10,537 V4 images) although nothing was held. Trimming once per batch keeps the
    process at its working set, for about 1 % of the time.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _progress(source: str, start: int, batch_size: int, n: int) -> None:
    """About ten progress lines per extraction, and the last batch."""
    n_batches = math.ceil(n / batch_size)
    b = start // batch_size + 1
    if b % max(1, n_batches // 10) == 0 or b == n_batches:
        print(f"extract {source}: {min(start + batch_size, n)}/{n} stimuli", flush=True)


def _check_inputs(stimulus_ids, stimuli, layers, reduction, batch_size):
    if reduction not in REDUCTIONS:
        raise fail("reduction", f"unknown reduction {reduction!r}", f"one of {REDUCTIONS}")
    if not layers:
        raise fail("layers", "no layers requested", "at least one layer name → module path")
    if len(stimulus_ids) != len(stimuli) or len(stimuli) == 0:
        raise fail("stimuli", f"{len(stimulus_ids)} ids for {len(stimuli)} stimuli",
                   "one id per stimulus and at least one stimulus")
    if len(set(stimulus_ids)) != len(stimulus_ids):
        raise fail("stimuli", f"{len(stimulus_ids) - len(set(stimulus_ids))} duplicate ids",
                   "unique stimulus ids")
    if batch_size < 1:
        raise fail("batch_size", f"{batch_size}", "a positive integer")


def extract_activations(model, preprocess, stimulus_ids, stimuli, layers: dict[str, str],
                        reduction: str = "center", batch_size: int = 32, source: str = "model",
                        config: dict | str = "", stop_early: bool = False) -> dict:
    """Run ``stimuli`` through ``model`` and return one activations Dataset per layer.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its previous mode is restored); inputs go to its device.
    preprocess : callable
        A list of stimuli → input batch tensor.
    stimulus_ids : sequence of str
        Unique id of each stimulus, in the order of ``stimuli``.
    stimuli : sequence
        The stimuli (e.g. H×W×3 uint8 images), indexable and sliceable.
    layers : dict
        Friendly layer name → dotted module path in ``model``.
    reduction : {"center", "mean", "flatten"}
    batch_size : int
    source : str
        Model name, stored as the ``source`` attr.
    config : dict or str
        Config slice of the job, hashed into ``config_sha``.
    stop_early : bool
        Stop each forward pass once every requested layer has run (the rest of the
        network is not computed).

    Returns
    -------
    dict of str → xarray.Dataset
        ``kind="neurons"`` stores with units ``<layer>/<index:05d>``.
    """
    _check_inputs(stimulus_ids, stimuli, layers, reduction, batch_size)
    chunks = {name: [] for name in layers}

    def take(name, output):
        return scoring_vectors(output, reduction)

    n = len(stimuli)
    with _Capture(model, layers, stop_early) as capture:
        for start in range(0, n, batch_size):
            for name, part in capture.run(preprocess(stimuli[start:start + batch_size]),
                                          take).items():
                chunks[name].append(part.numpy())
            _progress(source, start, batch_size, n)
    shapes = capture.shapes
    return {name: _activation_store(name, np.concatenate(chunks[name]), stimulus_ids,
                                    layers[name], shapes[name], reduction, source, config)
            for name in layers}


def _module_path(spec, model: str, layer: str, module: str | None) -> str:
    """``module``, or (``None``) the dotted path of the model's named layer ``layer``."""
    if module is not None:
        return module
    if layer not in spec.layers:
        raise fail(f"model {model!r}", f"unknown layer {layer!r}",
                   f"one of {list(spec.layers)}, or layers: {{name: module.path}}")
    return spec.layers[layer]


def extract_model(model: str, stimulus_ids, stimuli, layer: str, module: str | None = None,
                  reduction: str = "center", batch_size: int = 32, config: dict | str = ""):
    """One layer of a model found by :func:`sparsealign.models.get_model` → one store.

    ``module`` is the layer's dotted module path; ``None`` looks ``layer`` up among the
    model's named layers. The forward pass stops once the layer has run.
    """
    from sparsealign.models import get_model

    spec = get_model(model)
    module = _module_path(spec, model, layer, module)
    return extract_activations(spec.build(), spec.preprocess, stimulus_ids, stimuli,
                               {layer: module}, reduction=reduction, batch_size=batch_size,
                               source=model, config=config, stop_early=True)[layer]


def _activation_store(name, values, stimulus_ids, module_path, shape, reduction, source, config):
    unit_ids = [f"{name}/{i:05d}" for i in range(values.shape[1])]
    attrs = {"module": module_path, "reduction": reduction,
             "output_shape": list(shape)}
    return schema.make_store(values, stimulus_ids, unit_ids, source=source, layer=name,
                             kind="neurons", config=config, attrs=attrs)


def save_activations(datasets: dict, out_dir) -> dict[str, Path]:
    """Write each layer's store to ``<out_dir>/<layer>.zarr`` (atomically); return the paths."""
    out_dir = Path(out_dir)
    return {name: schema.save_store(ds, out_dir / f"{name}.zarr") for name, ds in datasets.items()}


def extract_network(model: str, stimulus_ids, stimuli, layers: dict[str, str | None], out_dir,
                    *, reduction: str = "center", batch_size: int = 32,
                    config: dict | str = "",
                    rows: dict | None = None) -> dict[str, dict[str, Path]]:
    """All requested layers of one model, in one forward pass per batch → stores on disk.

    Parameters
    ----------
    model : str
        A name :func:`sparsealign.models.get_model` resolves (``module:function`` too).
    stimulus_ids, stimuli : as for :func:`extract_activations`.
    layers : dict
        Friendly layer name → dotted module path, or ``None`` for the model's named layer
        of that name. Each pass stops once every requested layer has run.
    out_dir : path
        Receives ``<layer>.zarr`` per layer: the scoring store, the same as
        :func:`extract_model` writes (``reduction`` of each stimulus' output).
    reduction : {"center", "mean", "flatten"}
    batch_size : int
    config : dict or str
        Config slice of the job, hashed into ``config_sha`` of every store.
    rows : dict or None
        Also write ``<layer>.rows.zarr``, the SAE training rows (layout in the module
        docstring), with the keys of :data:`ROWS_DEFAULTS`:

        - ``positions`` (int or None): a random subsample of this many spatial positions
          per image, without replacement, capped at the number of positions; None = all.
          The draw of image ``i`` (index in ``stimuli``) is seeded by ``(seed, i,
          flipped)``, so it does not depend on the batch size;
        - ``flips`` (bool): also the horizontally flipped image (the preprocessed input
          mirrored along its last axis), with its own position draw;
        - ``seed`` (int);
        - ``dtype``: ``"float16"`` or ``"float32"``;
        - ``chunk_rows`` (int): rows per Zarr chunk of ``responses``.

    Returns
    -------
    dict
        layer → ``{"scoring": <layer>.zarr, "rows": <layer>.rows.zarr}`` (``"rows"`` only
        when ``rows`` is given).

    Notes
    -----
    The rows are streamed: each batch's rows are handed to a writer thread (a bounded
    queue, so writing overlaps the next forward pass) that writes whole chunks as they
    fill; at most a chunk and a few batches per layer are in memory. Every store is written
    under a temporary name and renamed into place at the end, so a killed job leaves no
    store under a final name.
    """
    from sparsealign.models import get_model

    settings = _rows_settings(rows)
    spec = get_model(model)
    paths = {name: _module_path(spec, model, name, module) for name, module in layers.items()}
    _check_inputs(stimulus_ids, stimuli, paths, reduction, batch_size)
    out_dir = Path(out_dir)
    out = {name: {"scoring": out_dir / f"{name}.zarr"} for name in paths}
    if settings is not None:
        for name in paths:
            out[name]["rows"] = out_dir / f"{name}.rows.zarr"
    net = spec.build()
    n = len(stimuli)
    scores = {name: [] for name in paths}
    with contextlib.ExitStack() as stack:
        capture = stack.enter_context(_Capture(net, paths, stop_early=True))
        writer = _RowsWriter() if settings is not None else None
        stores = {}
        if writer is not None:
            temps = {name: stack.enter_context(atomic_path(out[name]["rows"])) for name in paths}
            stack.callback(writer.abort)   # runs first: stop writing before temps are removed
        for start in range(0, n, batch_size):
            inputs = spec.preprocess(stimuli[start:start + batch_size])
            images = np.arange(start, start + len(inputs))
            plain = capture.run(inputs, _taker(reduction, settings, images, False))
            for name, (score, _) in plain.items():
                scores[name].append(score.numpy())
            if writer is not None:
                parts = {name: [part] for name, (_, part) in plain.items()}
                if settings["flips"]:
                    flipped = capture.run(inputs.flip(-1), _taker(None, settings, images, True))
                    for name, (_, part) in flipped.items():
                        parts[name].append(part)
                for name, layer_parts in parts.items():
                    if name not in stores:
                        stores[name] = _RowsStore(
                            temps[name], name, paths[name], capture.shapes[name], stimulus_ids,
                            settings, source=model, config=config)
                    writer.submit(stores[name].append, _interleave(layer_parts))
            _release_freed_memory()
            _progress(model, start, batch_size, n)
        if writer is not None:
            for store in stores.values():
                writer.submit(store.finish)
            writer.close()
        for name in paths:
            store = _activation_store(name, np.concatenate(scores[name]), stimulus_ids,
                                      paths[name], capture.shapes[name], reduction, model, config)
            schema.save_store(store, out[name]["scoring"])
    return out


def _rows_settings(rows: dict | None) -> dict | None:
    """``rows`` checked and completed with :data:`ROWS_DEFAULTS`; None stays None."""
    if rows is None:
        return None
    unknown = sorted(set(rows) - set(ROWS_DEFAULTS))
    if unknown:
        raise fail("rows", f"unknown keys {unknown}", f"keys among {sorted(ROWS_DEFAULTS)}")
    settings = {**ROWS_DEFAULTS, **rows}

    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    positions = settings["positions"]
    if positions is not None and not (is_int(positions) and positions >= 1):
        raise fail("rows.positions", f"{positions!r}", "a positive integer or null (all)")
    if not isinstance(settings["flips"], bool):
        raise fail("rows.flips", f"{settings['flips']!r}", "true or false")
    if not is_int(settings["seed"]):
        raise fail("rows.seed", f"{settings['seed']!r}", "an integer")
    if settings["dtype"] not in ROWS_DTYPES:
        raise fail("rows.dtype", f"{settings['dtype']!r}", f"one of {ROWS_DTYPES}")
    if not (is_int(settings["chunk_rows"]) and settings["chunk_rows"] >= 1):
        raise fail("rows.chunk_rows", f"{settings['chunk_rows']!r}", "a positive integer")
    return settings


def sample_positions(n_positions: int, positions: int | None, seed: int, image: int,
                     flipped: bool) -> np.ndarray:
    """The sorted flat spatial positions drawn for one image (of ``n_positions``).

    ``positions=None`` (or at least ``n_positions``) keeps them all; otherwise a draw
    without replacement seeded by ``(seed, image, flipped)``.
    """
    if positions is None or positions >= n_positions:
        return np.arange(n_positions)
    rng = np.random.default_rng([seed, image, int(flipped)])
    return np.sort(rng.choice(n_positions, positions, replace=False))


def _taker(reduction, settings, images: np.ndarray, flipped: bool):
    """The ``take`` of one pass: (scoring vector or None, training rows or None) per layer.

    Training rows leave the device as (images, positions, units) in the rows dtype, with
    their (image index, position) pairs.
    """
    import torch

    def take(name, output):
        score = scoring_vectors(output, reduction) if reduction else None
        if settings is None:
            return score, None
        # (N, P, C): a view for a channels-last output, positions flat in row-major order.
        maps = output.movedim(1, -1).reshape(output.shape[0], -1, output.shape[1])
        index = np.stack([sample_positions(maps.shape[1], settings["positions"],
                                           settings["seed"], int(i), flipped) for i in images])
        rows = torch.arange(len(index), device=maps.device)[:, None]
        dtype = getattr(torch, settings["dtype"])
        values = maps[rows, torch.from_numpy(index).to(maps.device)].to(dtype).cpu().numpy()
        return score, (values, index, flipped)
    return take


def _interleave(parts):
    """Rows of a batch, image by image: each image's plain rows, then its flipped rows.

    Returns ``(values (rows, units), image_index, position, flipped)``.
    """
    n_images, n_pos = parts[0][1].shape
    values = np.stack([p[0] for p in parts], axis=1).reshape(-1, parts[0][0].shape[-1])
    position = np.stack([p[1] for p in parts], axis=1).reshape(-1)
    flipped = np.repeat(np.array([[p[2] for p in parts]]), n_images, axis=0)
    flipped = np.repeat(flipped, n_pos, axis=1).reshape(-1)
    return values, position, flipped


class _RowsStore:
    """One layer's rows store (module docstring), written in whole chunks, in row order.

    Created by the producer once the layer's output shape is known; :meth:`append` and
    :meth:`finish` then run on the writer thread only.
    """

    def __init__(self, path: Path, name: str, module: str, shape: tuple, stimulus_ids,
                 settings: dict, *, source: str, config):
        import zarr

        from sparsealign.provenance import config_sha, created_by

        n_units = shape[0]
        n_positions = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        per_image = n_positions if settings["positions"] is None else \
            min(settings["positions"], n_positions)
        copies = 2 if settings["flips"] else 1
        self.n_images, self.per_image = len(stimulus_ids), per_image * copies
        n_rows = self.n_images * self.per_image
        self.chunk = min(settings["chunk_rows"], n_rows)
        group = zarr.open_group(path, mode="w", zarr_format=3)
        group.attrs.update({
            "source": source, "layer": name, "kind": "training_rows", "module": module,
            "output_shape": list(shape), "positions": settings["positions"],
            "positions_per_image": per_image, "flips": settings["flips"],
            "seed": int(settings["seed"]), "created_by": created_by(),
            "config_sha": config if isinstance(config, str) else config_sha(config)})
        opts = {"config": {"write_empty_chunks": True}}   # a missing chunk = a broken store
        self.arrays = {
            "responses": group.create_array(
                "responses", shape=(n_rows, n_units), chunks=(self.chunk, n_units),
                dtype=settings["dtype"], fill_value=0, dimension_names=("row", "unit"),
                attributes={"coordinates": "image_index position flipped"}, **opts),
            **{key: group.create_array(key, shape=(n_rows,), chunks=(self.chunk,), dtype=dtype,
                                       fill_value=0, dimension_names=("row",), **opts)
               for key, dtype in (("image_index", "int32" if self.n_images < 2**31 else "int64"),
                                  ("position", "int32"), ("flipped", "bool"))}}
        for key, ids in (("image", stimulus_ids), ("unit",
                         [f"{name}/{i:05d}" for i in range(n_units)])):
            group.create_array(key, shape=(len(ids),), dtype=str, dimension_names=(key,),
                               **opts)[:] = np.asarray(ids, dtype=str)
        self.offset, self.pending, self.n_pending = 0, [], 0

    def append(self, batch) -> None:
        """Queue a batch's ``(values, position, flipped)``; write every chunk now full."""
        values, position, flipped = batch
        first = (self.offset + self.n_pending) // self.per_image
        image_index = np.repeat(np.arange(first, first + len(values) // self.per_image),
                                self.per_image)
        self.pending.append((values, image_index, position, flipped))
        self.n_pending += len(values)
        if self.n_pending >= self.chunk:
            self._write(self.n_pending // self.chunk * self.chunk)

    def finish(self) -> None:
        """Write the last, partial chunk and check that every row was written."""
        if self.n_pending:
            self._write(self.n_pending)
        expected = self.arrays["responses"].shape[0]
        if self.offset != expected:
            raise RuntimeError(f"rows store: wrote {self.offset} of {expected} rows")

    def _write(self, n: int) -> None:
        columns = [np.concatenate(c) for c in zip(*self.pending)]
        stop = self.offset + n
        for key, column in zip(("responses", "image_index", "position", "flipped"), columns):
            self.arrays[key][self.offset:stop] = column[:n]
        rest = [c[n:] for c in columns]
        self.pending = [tuple(rest)] if len(rest[0]) else []
        self.offset, self.n_pending = stop, len(rest[0])


class _RowsWriter:
    """A thread running write jobs in order, at most ``depth`` jobs behind the producer.

    An error in a job is re-raised by the next :meth:`submit` or by :meth:`close`; later
    jobs are skipped. :meth:`abort` (on the way out of an error) stops it without raising.
    """

    def __init__(self, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._skip = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while (job := self._queue.get()) is not None:
            if self._error is None and not self._skip:
                try:
                    job[0](*job[1:])
                except BaseException as exc:  # handed to the producer
                    self._error = exc

    def submit(self, fn, *args) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put((fn, *args), timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait for every job; re-raise the first error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Skip the jobs still queued and stop (no-op once closed)."""
        self._skip = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
