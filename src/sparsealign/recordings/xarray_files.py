"""NetCDF (``.nc``) or Zarr files that follow, or nearly follow, the store contract.

"Nearly" means: other names for the dims, coords or the responses variable (``rename``,
or ``variable``), dims in another order, extra variables (dropped), or missing attrs
(filled: ``source`` from the file name, ``layer`` from the variable). The stimulus and
unit ids must be there as coordinates: positions are never taken for ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsealign import schema
from sparsealign.errors import fail
from sparsealign.recordings.common import recording_store


def _open(path):
    import xarray as xr

    if not path.exists():
        raise fail(path, "no such file or store", "a NetCDF file or a Zarr store")
    try:
        if path.is_dir() or path.suffix == ".zarr":
            return xr.open_zarr(path, consolidated=False).load()
        return xr.open_dataset(path).load()
    except Exception as exc:  # xarray raises many types depending on the backend
        raise fail(path, f"not readable as NetCDF or Zarr ({type(exc).__name__}: {exc})",
                   "a NetCDF file (NetCDF4 needs h5netcdf or netCDF4 installed) "
                   "or a Zarr store") from None


def load_xarray_file(path, *, variable: str = "responses", rename: dict | None = None,
                     source: str | None = None, layer: str | None = None,
                     config: dict | str = ""):
    """Read a NetCDF/Zarr recording into a validated recording store.

    Parameters
    ----------
    path : path
        ``.nc`` file or Zarr store directory.
    variable : str
        Name of the responses variable (after ``rename``).
    rename : dict, optional
        Old → new names for dims, coords or variables, applied first, e.g.
        ``{"image": "stimulus", "neuron": "unit", "trial": "repeat"}``.
    source, layer : str, optional
        Override the file's attrs (defaults: file's attrs, else file stem / ``variable``).
    """
    path = Path(path)
    ds = _open(path)
    rename = rename or {}
    unknown = [name for name in rename if name not in ds.variables and name not in ds.dims]
    if unknown:
        raise fail(path, f"cannot rename {unknown}: not in the file "
                         f"(dims {list(ds.dims)}, variables {list(ds.variables)})",
                   "names that exist in the file")
    ds = ds.rename(rename)
    if variable not in ds.data_vars:
        raise fail(path, f"no variable {variable!r} (found {list(ds.data_vars)})",
                   "the responses variable (set variable= or rename=)")
    responses = ds[variable]
    dims = schema.DIMS if responses.ndim == 2 else schema.DIMS_WITH_REPEATS
    if set(responses.dims) != set(dims):
        raise fail(path, f"{variable!r} has dims {responses.dims}",
                   f"{schema.DIMS} or {schema.DIMS_WITH_REPEATS} (rename= maps other names)")
    responses = responses.transpose(*dims)
    for dim in schema.DIMS:
        if dim not in ds.coords:
            raise fail(path, f"no {dim} ids: dim {dim!r} has no coordinate",
                       f"a coordinate of string ids on {dim!r}")
    extra = {name: (coord.dims[0], coord.values) for name, coord in ds.coords.items()
             if name not in schema.DIMS_WITH_REPEATS and coord.ndim == 1
             and coord.dims[0] in schema.DIMS}
    attrs = {k: v for k, v in ds.attrs.items()
             if k not in ("source", "layer", "kind", "created_by", "config_sha")}
    attrs["responses_file"] = str(path)
    # Zarr's variable-length strings come back as StringDType, which astype(str) refuses.
    stimulus_ids = [str(v) for v in ds["stimulus"].values.tolist()]
    unit_ids = [str(v) for v in ds["unit"].values.tolist()]
    return recording_store(np.asarray(responses.values), stimulus_ids, unit_ids, path=path,
                           source=source or ds.attrs.get("source", path.stem),
                           layer=layer or ds.attrs.get("layer", variable), config=config,
                           attrs=attrs, coords=extra)
