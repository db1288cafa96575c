"""User recordings in NWB, NetCDF/Zarr and NumPy files → validated recording stores."""

from datetime import datetime, timezone

import numpy as np
import pytest
import xarray as xr

from sparsealign.errors import SparsealignError
from sparsealign.recordings.common import merge_duplicate_stimuli
from sparsealign.recordings.npz import load_npz
from sparsealign.recordings.nwb import (count_spikes, load_nwb_response_series,
                                        load_nwb_spike_counts)
from sparsealign.recordings.xarray_files import load_xarray_file

RESPONSES = np.arange(12, dtype=float).reshape(4, 3)  # 4 stimuli × 3 units
IDS = ["img-a", "img-b", "img-c", "img-d"]


def write_ids(path, ids):
    path.write_text("# stimulus ids\n" + "\n".join(ids) + "\n")
    return path


# --- npz -------------------------------------------------------------------------------


def test_npy_with_an_id_file_becomes_a_store(tmp_path):
    np.save(tmp_path / "v4.npy", RESPONSES.T)
    store = load_npz(tmp_path / "v4.npy", write_ids(tmp_path / "ids.txt", IDS),
                     layout="unit_stimulus", layer="session1")
    np.testing.assert_array_equal(store["responses"].values, RESPONSES)
    assert store["stimulus"].values.tolist() == IDS
    assert store["unit"].values.tolist() == ["session1/00000", "session1/00001", "session1/00002"]
    assert store.attrs["kind"] == "recording" and store.attrs["source"] == "v4"


def test_npz_array_with_repeats_keeps_nan_padding(tmp_path):
    trials = np.stack([RESPONSES, RESPONSES + 1, np.full_like(RESPONSES, np.nan)], axis=2)
    np.savez(tmp_path / "r.npz", counts=trials)
    store = load_npz(tmp_path / "r.npz", IDS, key="counts", unit_ids=["a", "b", "c"])
    assert store["responses"].dims == ("stimulus", "unit", "repeat")
    assert np.isnan(store["responses"].values[..., 2]).all()


@pytest.mark.parametrize("setup, problem", [
    (lambda p: np.save(p / "x.npy", RESPONSES[:, :, None, None]), r"shape \(4, 3, 1, 1\)"),
    (lambda p: np.save(p / "x.npy", RESPONSES[:3]), "4 stimulus ids for an array of shape \\(3, 3\\) read as layout"),
    (lambda p: np.save(p / "x.npy", np.where(RESPONSES == 7, np.nan, RESPONSES)),
     r"1 stimuli have NaN .*ids: img-c"),
    (lambda p: np.save(p / "x.npy", np.array([["a"] * 3] * 4)), "dtype <U1"),
    (lambda p: (p / "x.npy").write_bytes(b"junk"), "not a readable NumPy file"),
])
def test_malformed_arrays_are_errors_naming_the_file(tmp_path, setup, problem):
    setup(tmp_path)
    with pytest.raises(SparsealignError, match=r"x\.npy: .*" + problem):
        load_npz(tmp_path / "x.npy", IDS)


def test_missing_or_duplicate_stimulus_ids_are_errors(tmp_path):
    np.save(tmp_path / "x.npy", RESPONSES)
    with pytest.raises(SparsealignError, match=r"ids\.txt: no such file"):
        load_npz(tmp_path / "x.npy", tmp_path / "ids.txt")
    with pytest.raises(SparsealignError, match=r"x\.npy: 1 duplicate stimulus ids"):
        load_npz(tmp_path / "x.npy", ["a", "b", "c", "a"])
    with pytest.raises(SparsealignError, match=r"x\.npy: empty stimulus ids"):
        load_npz(tmp_path / "x.npy", ["a", "b", "c", ""])
    np.savez(tmp_path / "y.npz", other=RESPONSES)
    with pytest.raises(SparsealignError, match=r"y\.npz: no array 'responses' \(found \['other"):
        load_npz(tmp_path / "y.npz", IDS)


# --- NetCDF / Zarr ---------------------------------------------------------------------


def nearly_schema_dataset():
    return xr.Dataset({"rates": (("neuron", "image"), RESPONSES.T)},
                      coords={"image": np.array(IDS, dtype=object),
                              "neuron": np.array(["n0", "n1", "n2"], dtype=object),
                              "depth": ("neuron", [1.0, 2.0, 3.0])},
                      attrs={"lab": "test"})


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_nearly_schema_files_are_renamed_and_transposed(tmp_path, suffix):
    path = tmp_path / f"rec{suffix}"
    ds = nearly_schema_dataset()
    if suffix == ".nc":
        ds.to_netcdf(path, engine="scipy")
    else:
        ds.to_zarr(path, zarr_format=3, consolidated=False)
    store = load_xarray_file(path, variable="rates",
                             rename={"image": "stimulus", "neuron": "unit"})
    np.testing.assert_array_equal(store["responses"].values, RESPONSES)
    assert store["stimulus"].values.tolist() == IDS
    assert store["depth"].values.tolist() == [1.0, 2.0, 3.0]
    assert store.attrs["lab"] == "test" and store.attrs["source"] == "rec"


def test_schema_problems_in_xarray_files_are_named(tmp_path):
    path = tmp_path / "rec.nc"
    nearly_schema_dataset().to_netcdf(path, engine="scipy")
    with pytest.raises(SparsealignError, match=r"rec\.nc: 'rates' has dims \('neuron', 'image'\)"):
        load_xarray_file(path, variable="rates")
    with pytest.raises(SparsealignError, match=r"rec\.nc: no variable 'responses'"):
        load_xarray_file(path, rename={"image": "stimulus", "neuron": "unit"})
    with pytest.raises(SparsealignError, match=r"cannot rename \['trial'\]"):
        load_xarray_file(path, rename={"trial": "repeat"})
    bare = xr.Dataset({"responses": (("stimulus", "unit"), RESPONSES)},
                      coords={"unit": ["a", "b", "c"]})
    bare.to_netcdf(tmp_path / "bare.nc", engine="scipy")
    with pytest.raises(SparsealignError, match=r"bare\.nc: no stimulus ids"):
        load_xarray_file(tmp_path / "bare.nc")
    (tmp_path / "junk.nc").write_bytes(b"junk")
    with pytest.raises(SparsealignError, match=r"junk\.nc: not readable as NetCDF or Zarr"):
        load_xarray_file(tmp_path / "junk.nc")


# --- NWB -------------------------------------------------------------------------------


def write_nwb(path, spike_times, presentations, series=None):
    """NWB file with units' spike times, a trials table (start, stimulus_id) and a series."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwbfile = NWBFile(session_description="test", identifier="t",
                      session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    for times in spike_times:
        nwbfile.add_unit(spike_times=times)
    nwbfile.add_trial_column("stimulus_id", "stimulus shown")
    for start, stimulus in presentations:
        nwbfile.add_trial(start_time=start, stop_time=start + 0.2, stimulus_id=stimulus)
    if series is not None:
        nwbfile.add_acquisition(TimeSeries(name="rates", data=series, unit="Hz",
                                           timestamps=[p[0] for p in presentations]))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


SPIKES = [[0.01, 0.05, 0.15, 1.02, 2.5], [0.09, 1.0, 1.01, 1.099, 1.1]]
SHOWN = [(0.0, "img-a"), (1.0, "img-b"), (2.0, "img-a")]


def test_spike_counts_per_presentation_with_repeats(tmp_path):
    store = load_nwb_spike_counts(write_nwb(tmp_path / "s.nwb", SPIKES, SHOWN), window=(0.0, 0.1))
    assert store["stimulus"].values.tolist() == ["img-a", "img-b"]
    assert store["unit"].values.tolist() == ["units/00000", "units/00001"]
    values = store["responses"].values  # (stimulus, unit, repeat)
    np.testing.assert_array_equal(values[0], [[2, 0], [1, 0]])  # img-a at 0 s and 2 s
    np.testing.assert_array_equal(values[1, :, 0], [1, 3])
    assert np.isnan(values[1, :, 1]).all()
    mean = load_nwb_spike_counts(tmp_path / "s.nwb", repeats="mean")
    np.testing.assert_array_equal(mean["responses"].values, [[1, 0.5], [1, 3]])


def test_a_response_series_with_an_id_file(tmp_path):
    series = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    path = write_nwb(tmp_path / "s.nwb", SPIKES, [(0.0, "x"), (1.0, "y"), (2.0, "z")], series)
    store = load_nwb_response_series(path, "rates",
                                     stimulus_ids=write_ids(tmp_path / "ids.txt", ["p", "q", "r"]))
    np.testing.assert_array_equal(store["responses"].values, series)
    assert store["stimulus"].values.tolist() == ["p", "q", "r"]
    from_trials = load_nwb_response_series(path, "rates")
    assert from_trials["stimulus"].values.tolist() == ["x", "y", "z"]


def test_nwb_problems_are_named(tmp_path):
    path = write_nwb(tmp_path / "s.nwb", SPIKES, SHOWN, np.ones((3, 2)))
    with pytest.raises(SparsealignError, match=r"s\.nwb: intervals table 'trials' has no column"):
        load_nwb_spike_counts(path, stimulus_column="image")
    with pytest.raises(SparsealignError, match=r"s\.nwb: no intervals table 'flashes'"):
        load_nwb_spike_counts(path, intervals="flashes")
    with pytest.raises(SparsealignError, match=r"s\.nwb: no TimeSeries 'lfp' \(found \['rates"):
        load_nwb_response_series(path, "lfp")
    with pytest.raises(SparsealignError, match=r"s\.nwb: 2 stimulus ids for 3 rows"):
        load_nwb_response_series(path, "rates", stimulus_ids=["a", "b"])
    with pytest.raises(SparsealignError, match="window"):
        load_nwb_spike_counts(path, window=(0.1, 0.0))
    (tmp_path / "junk.nwb").write_bytes(b"junk")
    with pytest.raises(SparsealignError, match=r"junk\.nwb: not a readable NWB file"):
        load_nwb_spike_counts(tmp_path / "junk.nwb")


def test_count_spikes_uses_half_open_windows():
    np.testing.assert_array_equal(count_spikes([0.0, 0.1, 0.2], [0.0, 0.1], (0.0, 0.1)), [1, 1])


def test_merging_duplicates_pools_repeats_side_by_side():
    values = np.array([[[1.0, np.nan]], [[5.0, 6.0]], [[2.0, 3.0]]])  # a, b, a
    merged, ids, first, n = merge_duplicate_stimuli(values, ["a", "b", "a"])
    assert ids.tolist() == ["a", "b"] and first.tolist() == [0, 1] and n.tolist() == [2, 1]
    np.testing.assert_array_equal(merged[0, 0], [1.0, np.nan, 2.0, 3.0])
    np.testing.assert_array_equal(merged[1, 0], [5.0, 6.0, np.nan, np.nan])


def test_npz_ids_that_do_not_match_the_layout_say_which_layout_was_assumed(tmp_path):
    from sparsealign.errors import SparsealignError
    from sparsealign.recordings.npz import load_npz

    np.savez(tmp_path / "rec.npz", responses=np.ones((5, 30)))  # 5 units × 30 stimuli
    (tmp_path / "ids.txt").write_text("\n".join(f"s{i}" for i in range(30)))
    with pytest.raises(SparsealignError) as info:
        load_npz(tmp_path / "rec.npz", tmp_path / "ids.txt")
    assert str(info.value) == (f"{tmp_path / 'rec.npz'}: 30 stimulus ids for an array of shape (5, 30) "
                               "read as layout stimulus_unit (5 stimuli); expected one id per stimulus;"
                               " if the first axis holds units, set layout: unit_stimulus")
    ds = load_npz(tmp_path / "rec.npz", tmp_path / "ids.txt", layout="unit_stimulus")
    assert ds.sizes == {"stimulus": 30, "unit": 5}
