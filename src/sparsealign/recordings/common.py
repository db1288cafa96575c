"""Shared steps of the recording loaders: id lists, duplicate stimuli, building the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsealign import schema
from sparsealign.errors import SparsealignError, fail


def read_id_list(path) -> list[str]:
    """Stimulus ids from a text file, one per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "no such file", "a text file with one stimulus id per line")
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def repeats_store(store) -> Path | None:
    """The trials of a recording store: ``<name>_repeats.zarr`` beside it, if it exists.

    A recording's responses store is (stimulus, unit), averaged over repeats; where trials
    exist, the import writes them beside it with a ``repeat`` dim (for the noise ceiling).
    """
    path = Path(store)
    trials = path.with_name(f"{path.name.removesuffix('.zarr')}_repeats.zarr")
    return trials if trials.exists() else None


def merge_duplicate_stimuli(values, stimulus_ids):
    """Combine rows that show the same stimulus.

    Parameters
    ----------
    values : ndarray, shape (presentations, units) or (presentations, units, repeats)
    stimulus_ids : sequence of str, one per row

    Returns
    -------
    merged : ndarray
        2-D: the mean of a stimulus' rows. 3-D: its rows' repeats side by side, NaN-padded.
    ids : ndarray of str
        Unique ids in order of first appearance.
    first_row : ndarray of int
        Row of each id's first appearance.
    n_rows : ndarray of int
        Rows merged into each id.
    """
    values, stimulus_ids = np.asarray(values), np.asarray(stimulus_ids, dtype=str)
    ids, first_row, inverse, n_rows = np.unique(stimulus_ids, return_index=True,
                                                return_inverse=True, return_counts=True)
    order = np.argsort(first_row)
    groups = [np.flatnonzero(inverse == g) for g in order]
    if values.ndim == 2:
        merged = np.stack([values[rows].mean(axis=0) for rows in groups])
    else:
        pooled = [np.concatenate(list(values[rows]), axis=-1) for rows in groups]
        width = max(p.shape[-1] for p in pooled)
        merged = np.full((len(groups), values.shape[1], width), np.nan)
        for g, p in enumerate(pooled):
            merged[g, :, :p.shape[-1]] = p
    return merged, ids[order], first_row[order], n_rows[order]


def recording_store(values, stimulus_ids, unit_ids, *, path, source: str, layer: str,
                    config: dict | str = "", attrs: dict | None = None,
                    coords: dict | None = None):
    """Validate a (stimulus, unit[, repeat]) matrix read from ``path`` into a recording store.

    Errors name ``path`` (the input file) rather than the store being built.
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise fail(path, f"responses have dtype {values.dtype}", "numeric responses")
    if values.ndim not in (2, 3):
        raise fail(path, f"responses have {values.ndim} dims {values.shape}",
                   "(stimulus, unit) or (stimulus, unit, repeat)")
    if values.shape[:2] != (len(stimulus_ids), len(unit_ids)):
        raise fail(path, f"responses of shape {values.shape} for {len(stimulus_ids)} stimulus "
                         f"ids and {len(unit_ids)} unit ids",
                   "one row per stimulus id and one column per unit")
    if any(not str(s) for s in stimulus_ids):
        raise fail(path, "empty stimulus ids", "a non-empty id for every stimulus")
    # Object dtype makes Zarr store text coords as variable-length strings, which have
    # a Zarr v3 specification (fixed-width unicode has none).
    coords = {name: (dim, np.asarray(values, dtype=object) if np.asarray(values).dtype.kind
                     in "US" else values) for name, (dim, values) in (coords or {}).items()}
    try:
        return schema.make_store(values, stimulus_ids, unit_ids, source=source, layer=layer,
                                 kind="recording", config=config, attrs=attrs, coords=coords)
    except SparsealignError as exc:
        raise SparsealignError(str(exc).replace("<new store>", str(path), 1)) from None
