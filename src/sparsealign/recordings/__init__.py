"""Neural recordings → the store contract of :mod:`sparsealign.schema` (``kind="recording"``).

``datasets`` imports the named real datasets of the data mirror (checksum-verified);
``nwb``, ``xarray_files`` and ``npz`` read a user's own recordings.
"""


def load_recording(params: dict, path, ids=None):
    """A recording file → a validated store, by ``params["format"]`` (a ``recording`` entry).

    ``npz``/``npy`` need ``ids`` (a text file of stimulus ids, one per row of the
    stimulus axis); ``nwb`` reads spike counts of the units table, or a ``series``;
    ``netcdf``/``zarr`` read ``variable`` after ``rename``.
    """
    from sparsealign.errors import fail

    fmt, name = params["format"], params.get("source") or None
    if fmt in ("npz", "npy"):
        from sparsealign.recordings.npz import load_npz

        if ids is None:
            raise fail(path, f"a {fmt} recording without an id list", "ids: a text file of stimulus ids")
        return load_npz(path, ids, key=params["key"], layout=params["layout"], source=name)
    if fmt == "nwb":
        from sparsealign.recordings import nwb

        options = dict(stimulus_column=params["stimulus_column"], source=name)
        if params.get("series"):
            return nwb.load_nwb_response_series(path, params["series"], stimulus_ids=ids, **options)
        return nwb.load_nwb_spike_counts(path, window=tuple(params["window"]), **options)
    if fmt in ("netcdf", "zarr"):
        from sparsealign.recordings.xarray_files import load_xarray_file

        return load_xarray_file(path, variable=params["variable"], rename=params.get("rename"),
                                source=name)
    raise fail(path, f"unknown recording format {fmt!r}", "npz, npy, nwb, netcdf or zarr")
