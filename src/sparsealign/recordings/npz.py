"""NumPy arrays (``.npy``, or one array of an ``.npz``) plus a stimulus id list → a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsealign.errors import fail
from sparsealign.recordings.common import read_id_list, recording_store

LAYOUTS = ("stimulus_unit", "unit_stimulus")


def _load_array(path, key):
    if not path.is_file():
        raise fail(path, "no such file", "a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise fail(path, f"not a readable NumPy file ({exc})", "a .npy or .npz file") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if key not in loaded.files:
            raise fail(path, f"no array {key!r} (found {loaded.files})",
                       "key= naming the responses")
        return loaded[key]


def load_npz(path, stimulus_ids, *, key: str = "responses", unit_ids=None,
             layout: str = "stimulus_unit", source: str | None = None, layer: str | None = None,
             config: dict | str = ""):
    """Read a response array and its stimulus ids into a validated recording store.

    Parameters
    ----------
    path : path
        ``.npy``, or ``.npz`` holding the array under ``key``.
    stimulus_ids : sequence of str or path
        Id of each stimulus row, or a text file of them (one per line).
    unit_ids : sequence of str or path, optional
        Default ``<layer>/<index:05d>``.
    layout : {"stimulus_unit", "unit_stimulus"}
        Order of the first two axes (a third axis is always ``repeat``).
    source, layer : str, optional
        Defaults: the file name without suffix, and ``key``.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise fail("layout", f"{layout!r}", f"one of {LAYOUTS}")
    values = _load_array(path, key)
    if values.ndim not in (2, 3):
        raise fail(path, f"array of shape {values.shape}",
                   "2 dims (stimulus, unit) or 3 dims (stimulus, unit, repeat)")
    if layout == "unit_stimulus":
        values = np.swapaxes(values, 0, 1)
    if isinstance(stimulus_ids, (str, Path)):
        stimulus_ids = read_id_list(stimulus_ids)
    if len(stimulus_ids) != values.shape[0]:
        other = LAYOUTS[1 - LAYOUTS.index(layout)]
        raise fail(path, f"{len(stimulus_ids)} stimulus ids for an array of shape "
                   f"{tuple(np.shape(values) if layout == 'stimulus_unit' else np.swapaxes(values, 0, 1).shape)}"
                   f" read as layout {layout} ({values.shape[0]} stimuli)",
                   f"one id per stimulus; if the first axis holds units, set layout: {other}")
    layer = layer or key
    if unit_ids is None:
        unit_ids = [f"{layer}/{i:05d}" for i in range(values.shape[1])]
    elif isinstance(unit_ids, (str, Path)):
        unit_ids = read_id_list(unit_ids)
    return recording_store(values, list(stimulus_ids), list(unit_ids), path=path,
                           source=source or path.stem, layer=layer, config=config,
                           attrs={"responses_file": str(path)})
