import numpy as np
import pytest

from sparsealign import schema
from sparsealign.errors import SparsealignError


def test_round_trip_keeps_values_ids_and_attrs(tmp_path, make_store, rng):
    ds = make_store(rng.normal(size=(50, 4)).astype("float32"))
    path = schema.save_store(ds, tmp_path / "a.zarr")
    back = schema.open_store(path)
    np.testing.assert_array_equal(back["responses"].values, ds["responses"].values)
    assert list(back["stimulus"].values) == list(ds["stimulus"].values)
    assert back["unit"].dtype.kind == "U"
    for attr in schema.REQUIRED_ATTRS:
        assert back.attrs[attr] == ds.attrs[attr]


def test_writes_are_byte_stable(tmp_path, make_store, rng):
    from sparsealign.provenance import path_md5

    ds = make_store(rng.normal(size=(20, 3)))
    schema.save_store(ds, tmp_path / "a.zarr")
    schema.save_store(ds, tmp_path / "b.zarr")
    assert path_md5(tmp_path / "a.zarr") == path_md5(tmp_path / "b.zarr")


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path, make_store, rng):
    path = tmp_path / "a.zarr"
    schema.save_store(make_store(rng.normal(size=(10, 2))), path)
    schema.save_store(make_store(rng.normal(size=(12, 2))), path)
    assert schema.open_store(path).sizes["stimulus"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_nan_responses_are_rejected_with_ids(make_store):
    values = np.ones((6, 2))
    values[3, 1] = np.nan
    with pytest.raises(SparsealignError, match=r"1 stimuli have NaN.*s00003"):
        make_store(values)


def test_wrong_dims_are_rejected(tmp_path):
    import xarray as xr

    ds = xr.Dataset({"responses": (("unit", "stimulus"), np.ones((2, 3)))},
                    coords={"unit": ["a", "b"], "stimulus": ["x", "y", "z"]},
                    attrs=dict.fromkeys(schema.REQUIRED_ATTRS, "neurons"))
    with pytest.raises(SparsealignError, match=r"bad\.zarr: 'responses' has dims \('unit', 'stimulus'\)"):
        schema.validate(ds, "bad.zarr")


def test_duplicate_ids_and_unknown_kind_are_rejected(make_store):
    from sparsealign.schema import make_store as raw

    with pytest.raises(SparsealignError, match="duplicate stimulus ids"):
        raw(np.ones((2, 1)), ["a", "a"], ["u"], source="s", layer="l", kind="neurons")
    with pytest.raises(SparsealignError, match="unknown kind"):
        make_store(np.ones((2, 1)), kind="spikes")


def test_repeats_allow_nan_padding_but_not_missing_means():
    values = np.ones((3, 2, 4))
    values[0, 0, 3] = np.nan  # an unrecorded trial
    ds = schema.make_store(values, ["a", "b", "c"], ["n0", "n1"], source="s", layer="l",
                           kind="recording")
    np.testing.assert_allclose(schema.responses(ds), 1.0)
    values[1, 1, :] = np.nan
    with pytest.raises(SparsealignError, match="ids: b"):
        schema.make_store(values, ["a", "b", "c"], ["n0", "n1"], source="s", layer="l",
                          kind="recording")


def test_missing_or_broken_store_is_one_clear_error(tmp_path):
    with pytest.raises(SparsealignError, match="no such store"):
        schema.open_store(tmp_path / "nope.zarr")
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(SparsealignError, match="broken.zarr: not a readable Zarr store"):
        schema.open_store(tmp_path / "broken.zarr")


def test_match_stimuli_by_id_not_position(make_store, rng):
    a = make_store(rng.normal(size=(5, 2)))
    b = a.isel(stimulus=[4, 2, 0, 1, 3])
    a2, b2 = schema.match_stimuli(a, b, mode="equal")
    np.testing.assert_array_equal(a2["responses"].values, b2["responses"].values)


def test_mismatched_stimulus_ids_are_one_clear_error(make_store, rng):
    a = make_store(rng.normal(size=(5, 2)))
    b = make_store(rng.normal(size=(5, 2)), stimulus_prefix="t")
    with pytest.raises(SparsealignError, match=r"a\.zarr vs b\.zarr: stimulus ids do not match"):
        schema.match_stimuli(a, b, "a.zarr", "b.zarr", mode="equal")
    with pytest.raises(SparsealignError, match="only 0 shared stimuli"):
        schema.match_stimuli(a, b, "a.zarr", "b.zarr", mode="intersect")
