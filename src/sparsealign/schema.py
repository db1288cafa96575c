"""The on-disk contract shared by activations, SAE latents and recordings.

Every store is one xarray ``Dataset`` in Zarr v3 format with a variable ``responses`` of
dims ``("stimulus", "unit")`` or ``("stimulus", "unit", "repeat")``, string coords
``stimulus`` and ``unit``, and the attrs listed in :data:`REQUIRED_ATTRS`. Writes are
atomic (``<path>.tmp-<pid>`` then rename), so a reader never sees half a store, and
nothing time-dependent is written, so the same inputs give the same bytes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sparsealign.atomic import atomic_path
from sparsealign.errors import SparsealignError, fail
from sparsealign.provenance import config_sha, created_by

KINDS = ("neurons", "sae_latents", "random_sae_latents", "recording", "ground_truth")
REQUIRED_ATTRS = ("source", "layer", "kind", "created_by", "config_sha")
DIMS = ("stimulus", "unit")
DIMS_WITH_REPEATS = ("stimulus", "unit", "repeat")
SPARSE_STORAGE = "topk_sparse"  # attr `latent_storage` of latents stored as indices/values


def make_store(values, stimulus_ids, unit_ids, *, source: str, layer: str, kind: str,
               config: dict | str = "", attrs: dict | None = None, coords: dict | None = None):
    """Wrap a (stimulus, unit[, repeat]) array into a validated Dataset.

    ``config`` is the config slice the producing job depends on (hashed into
    ``config_sha``); ``coords`` adds extra coordinates such as ``session`` on ``unit``.
    """
    import xarray as xr

    values = np.asarray(values)
    dims = DIMS if values.ndim == 2 else DIMS_WITH_REPEATS
    all_coords = {"stimulus": np.asarray(stimulus_ids, dtype=str),
                  "unit": np.asarray(unit_ids, dtype=str)}
    all_coords.update(coords or {})
    ds = xr.Dataset({"responses": (dims, values)}, coords=all_coords)
    ds.attrs.update({
        "source": source, "layer": layer, "kind": kind, "created_by": created_by(),
        "config_sha": config if isinstance(config, str) else config_sha(config),
    })
    ds.attrs.update(attrs or {})
    return validate(ds, "<new store>")


def validate(ds, path="<store>"):
    """Check ``ds`` against the contract; raise a one-line SparsealignError naming ``path``."""
    if "responses" not in ds.data_vars:
        raise fail(path, f"no variable 'responses' (found {sorted(ds.data_vars)})",
                   "an xarray Dataset with a 'responses' variable")
    resp = ds["responses"]
    if resp.dims not in (DIMS, DIMS_WITH_REPEATS):
        raise fail(path, f"'responses' has dims {resp.dims}",
                   f"{DIMS} or {DIMS_WITH_REPEATS}")
    if not np.issubdtype(resp.dtype, np.number):
        raise fail(path, f"'responses' has dtype {resp.dtype}", "a numeric dtype")
    for dim in DIMS:
        if dim not in ds.coords:
            raise fail(path, f"no '{dim}' coordinate", f"string ids on '{dim}'")
        ids = ds[dim].values
        if ids.size == 0:
            raise fail(path, f"no {dim}s", f"at least one {dim}")
        if len(np.unique(ids)) != ids.size:
            raise fail(path, f"{ids.size - len(np.unique(ids))} duplicate {dim} ids",
                       f"unique {dim} ids")
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise fail(path, f"missing attrs {missing}", f"attrs {list(REQUIRED_ATTRS)}")
    if ds.attrs["kind"] not in KINDS:
        raise fail(path, f"unknown kind {ds.attrs['kind']!r}", f"one of {KINDS}")
    _check_finite(resp, path)
    return ds


def _check_finite(resp, path):
    values = np.asarray(resp.values, dtype=float)
    if resp.ndim == 3:
        # Trials that were never recorded are NaN padding; the repeat mean must exist.
        if np.isinf(values).any():
            raise fail(path, "infinite responses", "finite values or NaN repeat padding")
        counts = np.isfinite(values).sum(axis=2)
        values = np.where(counts > 0, np.nansum(values, axis=2) / np.maximum(counts, 1), np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        ids = ", ".join(map(str, resp["stimulus"].values[rows[:5]]))
        more = " …" if rows.size > 5 else ""
        raise fail(path, f"{rows.size} stimuli have NaN or infinite responses (ids: {ids}{more})",
                   "finite values")


def save_store(ds, path) -> Path:
    """Validate and write ``ds`` to ``path`` (Zarr v3) atomically; returns the path."""
    validate(ds, path)
    # One chunk across units keeps column reads cheap; stimulus chunks bound memory.
    shape = ds["responses"].shape
    chunk_rows = max(1, min(shape[0], 2**22 // max(1, shape[1])))
    return write_atomic(ds, path, {"responses": {"chunks": (chunk_rows,) + shape[1:]}})


def write_atomic(ds, path, encoding: dict | None = None) -> Path:
    """Write any Dataset as Zarr v3 to ``<path>.tmp-<pid>``, then rename it into place.

    A reader sees the old store or the new one, never half of either. String coords are
    written as variable-length strings (Zarr v3 ``string``).
    """
    out = ds.copy()
    for name in ("stimulus", "unit"):
        if name in out.coords:
            out[name] = out[name].astype(object)
    with atomic_path(path) as tmp:
        # Every chunk is written, even one of fill values only: a missing chunk file then
        # always means a broken store (see open_store).
        out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding or {},
                    write_empty_chunks=True)
    return Path(path)


def open_store(path, load: bool = True):
    """Open and validate a store; ``load=False`` keeps it lazy (for large stores).

    A broken store (missing or unreadable chunk files, bad metadata, ids that are not
    strings) is one SparsealignError naming ``path``.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise fail(path, "no such store", "a Zarr store written by sparsealign")
    try:
        with warnings.catch_warnings():
            # Snakemake marks directory outputs with an empty `.snakemake_timestamp` file.
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
            ds = xr.open_zarr(path, consolidated=False)
            _check_chunks(path)
        if ds.attrs.get("latent_storage") == SPARSE_STORAGE:
            ds = _densify(ds.load(), path)
        elif load:
            ds = ds.load()
        _check_string_ids(ds, path)
        ds = validate(ds, path)  # reads every value, so a lazy store's chunks are read here too
    except SparsealignError:
        raise
    except Exception as exc:  # zarr raises many types for a broken store
        raise fail(path, f"not a readable Zarr store ({type(exc).__name__}: {exc})",
                   "a Zarr v3 store") from None
    for name in DIMS:  # Zarr returns numpy StringDType; downstream code wants <U
        ds = ds.assign_coords({name: ds[name].values.astype(object).astype(str)})
    return ds


def _check_chunks(path) -> None:
    """Every chunk file of every array is there: Zarr reads a missing one as fill values."""
    import zarr

    missing = [f"{name} ({array.nchunks - array.nchunks_initialized} of {array.nchunks})"
               for name, array in zarr.open_group(path, mode="r").arrays()
               if array.nchunks_initialized < array.nchunks]
    if missing:
        raise fail(path, f"chunk files missing: {', '.join(missing)}",
                   "a complete store (write or copy it again)")


def _check_string_ids(ds, path) -> None:
    for dim in (d for d in DIMS if d in ds.coords):  # a missing coordinate is validate's to report
        ids = ds[dim].values
        if ids.dtype.kind not in "UTO" or not all(isinstance(i, str) for i in ids.tolist()):
            kind = ids.dtype if ids.dtype.kind != "O" else "mixed objects"
            raise fail(path, f"{dim} ids are {kind}, not strings", f"string ids on '{dim}'")


def _densify(ds, path):
    """A top-k sparse latents store (``indices``/``values`` per stimulus) as dense ``responses``."""
    import xarray as xr

    indices, values = ds["indices"].values.astype(np.int64), ds["values"].values
    n_units = ds.sizes["unit"]
    if indices.min(initial=0) < -1 or indices.max(initial=0) >= n_units:
        raise fail(path, "latent indices out of range", f"-1 (padding) … {n_units - 1}")
    dense = np.zeros((ds.sizes["stimulus"], n_units), dtype=values.dtype)
    rows, slots = np.nonzero(indices >= 0)
    dense[rows, indices[rows, slots]] = values[rows, slots]
    attrs = {k: v for k, v in ds.attrs.items() if k != "latent_storage"}
    return xr.Dataset({"responses": (DIMS, dense)},
                      coords={"stimulus": ds["stimulus"].values, "unit": ds["unit"].values},
                      attrs=attrs)


def responses(ds) -> np.ndarray:
    """The (stimulus, unit) matrix as float64, averaging repeats when there are any."""
    resp = ds["responses"]
    if resp.ndim == 3:
        return np.nanmean(np.asarray(resp.values, dtype=np.float64), axis=2)
    return np.asarray(resp.values, dtype=np.float64)


def match_stimuli(a, b, path_a="<a>", path_b="<b>", mode: str = "equal", min_shared: int = 4):
    """Return ``(a, b)`` restricted to shared stimuli, both in ``a``'s order.

    ``mode="equal"`` requires both stores to hold the same stimulus set (two networks
    shown the same stimuli); ``mode="intersect"`` keeps the shared subset (a network
    against one recording session). Matching is always by id, never by position.
    """
    ids_a, ids_b = a["stimulus"].values, b["stimulus"].values
    in_b = np.isin(ids_a, ids_b)
    shared = ids_a[in_b]
    if mode == "equal" and (shared.size != ids_a.size or shared.size != ids_b.size):
        only_a = ids_a[~in_b][:3].tolist()
        only_b = ids_b[~np.isin(ids_b, ids_a)][:3].tolist()
        raise fail(f"{path_a} vs {path_b}",
                   f"stimulus ids do not match ({ids_a.size} vs {ids_b.size}, "
                   f"{shared.size} shared; only in first: {only_a}, only in second: {only_b})",
                   "the same stimulus ids in both stores")
    if shared.size < min_shared:
        raise fail(f"{path_a} vs {path_b}", f"only {shared.size} shared stimuli",
                   f"at least {min_shared}")
    return a.sel(stimulus=shared), b.sel(stimulus=shared)
