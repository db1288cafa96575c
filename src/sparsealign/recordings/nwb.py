"""NWB files (pynwb) → recording stores.

Two layouts are read:

- :func:`load_nwb_spike_counts`: the ``units`` table's spike times counted in a window
  after the start of each row of an intervals table (``trials`` by default) whose
  column ``stimulus_column`` names the stimulus shown;
- :func:`load_nwb_response_series`: a ``TimeSeries`` whose data is already a
  (presentation, unit) response matrix, one row per presentation, with the stimulus of
  each row from an intervals-table column or a list of ids.

A stimulus shown more than once gives a ``repeat`` dim (NaN-padded where it was shown
fewer times) unless ``repeats="mean"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsealign.errors import fail
from sparsealign.recordings.common import merge_duplicate_stimuli, read_id_list, recording_store

REPEATS = ("keep", "mean")


def _read_nwb(path, reader):
    """Open ``path`` and return ``reader(nwbfile)``, computed while the file is open."""
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.is_file():
        raise fail(path, "no such file", "an NWB (HDF5) file")
    def unreadable(exc):
        return fail(path, f"not a readable NWB file ({type(exc).__name__}: {exc})",
                    "an NWB 2.x file")

    try:
        io = NWBHDF5IO(str(path), "r")
    except Exception as exc:  # h5py/hdmf raise many types for a file that is not NWB
        raise unreadable(exc) from None
    with io:
        try:
            nwbfile = io.read()
        except Exception as exc:
            raise unreadable(exc) from None
        return reader(nwbfile)


def _intervals_table(nwbfile, name, path):
    table = nwbfile.trials if name == "trials" else (nwbfile.intervals or {}).get(name)
    if table is None:
        found = sorted(nwbfile.intervals or {})
        raise fail(path, f"no intervals table {name!r} (found {found})",
                   "a TimeIntervals table with one row per stimulus presentation")
    return table


def _stimulus_column(table, column, path) -> np.ndarray:
    if column not in table.colnames:
        raise fail(path, f"intervals table {table.name!r} has no column {column!r} "
                         f"(columns: {list(table.colnames)})",
                   "a column naming the stimulus of each presentation")
    ids = np.asarray([str(v.decode() if isinstance(v, bytes) else v) for v in table[column][:]])
    if any(not v for v in ids):
        raise fail(path, f"{sum(not v for v in ids)} presentations have an empty {column!r}",
                   "a stimulus id on every presentation")
    return ids


def _group_presentations(values, ids, repeats):
    """(presentation, unit) → (stimulus, unit[, repeat]) plus the unique ids."""
    if repeats not in REPEATS:
        raise fail("repeats", f"{repeats!r}", f"one of {REPEATS}")
    if len(np.unique(ids)) == len(ids):
        return values, ids
    if repeats == "mean":
        merged, unique, _, _ = merge_duplicate_stimuli(values, ids)
    else:
        merged, unique, _, _ = merge_duplicate_stimuli(values[:, :, None], ids)
    return merged, unique


def count_spikes(spike_times, starts, window) -> np.ndarray:
    """Spikes of one unit in ``[start + window[0], start + window[1])`` for each start."""
    spike_times = np.sort(np.asarray(spike_times, dtype=float))
    starts = np.asarray(starts, dtype=float)
    low = np.searchsorted(spike_times, starts + window[0], side="left")
    high = np.searchsorted(spike_times, starts + window[1], side="left")
    return (high - low).astype(float)


def load_nwb_spike_counts(path, *, window=(0.0, 0.1), intervals: str = "trials",
                          stimulus_column: str = "stimulus_id", repeats: str = "keep",
                          source: str | None = None, config: dict | str = ""):
    """Spike counts of every unit per presentation, as a recording store.

    Parameters
    ----------
    path : path
        NWB file with a ``units`` table (``spike_times``) and the intervals table.
    window : (float, float)
        Counting window in seconds relative to each presentation's ``start_time``.
    intervals : str
        ``"trials"`` or the name of a table under ``/intervals``.
    stimulus_column : str
        Column holding each presentation's stimulus id.
    repeats : {"keep", "mean"}
        Several presentations of one stimulus: a ``repeat`` dim, or their mean.
    source : str, optional
        ``source`` attr (default: the file name without suffix).
    """
    path = Path(path)
    if not (len(window) == 2 and window[1] > window[0]):
        raise fail("window", f"{tuple(window)}", "(start, stop) seconds with stop > start")

    def read(nwbfile):
        if nwbfile.units is None or len(nwbfile.units) == 0:
            raise fail(path, "no units table (or no units in it)", "a units table with spike_times")
        if "spike_times" not in nwbfile.units.colnames:
            raise fail(path, "units table has no spike_times", "spike times per unit")
        table = _intervals_table(nwbfile, intervals, path)
        ids = _stimulus_column(table, stimulus_column, path)
        starts = np.asarray(table["start_time"][:], dtype=float)
        counts = np.stack([count_spikes(nwbfile.units["spike_times"][u], starts, window)
                           for u in range(len(nwbfile.units))], axis=1)
        return counts, ids, np.asarray(nwbfile.units.id[:])

    counts, ids, unit_numbers = _read_nwb(path, read)
    values, stimulus_ids = _group_presentations(counts, ids, repeats)
    attrs = {"units": f"spike counts in [{window[0]}, {window[1]}) s after stimulus onset",
             "responses_file": str(path), "intervals": intervals}
    return recording_store(values, stimulus_ids, [f"units/{int(u):05d}" for u in unit_numbers],
                           path=path, source=source or path.stem, layer="units", config=config,
                           attrs=attrs)


def _find_series(nwbfile, name, path):
    if name in nwbfile.acquisition:
        return nwbfile.acquisition[name]
    for module in nwbfile.processing.values():
        if name in module.data_interfaces:
            return module.data_interfaces[name]
    available = list(nwbfile.acquisition) + [f"{m}/{i}" for m, mod in nwbfile.processing.items()
                                             for i in mod.data_interfaces]
    raise fail(path, f"no TimeSeries {name!r} (found {available})",
               "a TimeSeries in acquisition or a processing module")


def load_nwb_response_series(path, series: str, *, stimulus_ids=None, intervals: str = "trials",
                             stimulus_column: str = "stimulus_id", repeats: str = "keep",
                             source: str | None = None, config: dict | str = ""):
    """A (presentation, unit) ``TimeSeries`` of responses, as a recording store.

    Parameters
    ----------
    path : path
        NWB file.
    series : str
        Name of the TimeSeries (in ``acquisition`` or any processing module).
    stimulus_ids : sequence of str or path, optional
        Stimulus of each row, or a text file of them (one per line). Default: the
        ``stimulus_column`` of the ``intervals`` table, which must have one row per row.
    repeats : {"keep", "mean"}
    source : str, optional
    """
    path = Path(path)
    if isinstance(stimulus_ids, (str, Path)):
        stimulus_ids = read_id_list(stimulus_ids)

    def read(nwbfile):
        data = np.asarray(_find_series(nwbfile, series, path).data[:])
        ids = (np.asarray(stimulus_ids, dtype=str) if stimulus_ids is not None else
               _stimulus_column(_intervals_table(nwbfile, intervals, path), stimulus_column, path))
        return data, ids

    data, ids = _read_nwb(path, read)
    if data.ndim != 2:
        raise fail(path, f"TimeSeries {series!r} has shape {data.shape}",
                   "(presentation, unit) data")
    if len(ids) != data.shape[0]:
        raise fail(path, f"{len(ids)} stimulus ids for {data.shape[0]} rows of {series!r}",
                   "one stimulus id per row")
    values, unique_ids = _group_presentations(data.astype(float), ids, repeats)
    attrs = {"units": f"TimeSeries {series!r}", "responses_file": str(path)}
    return recording_store(values, unique_ids, [f"{series}/{i:05d}" for i in range(data.shape[1])],
                           path=path, source=source or path.stem, layer=series, config=config,
                           attrs=attrs)
