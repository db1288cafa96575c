"""Named datasets of the data mirror → verified recording stores (small subsets)."""

import hashlib
import shutil

import numpy as np
import pytest

from sparsealign import schema
from sparsealign.errors import SparsealignError
from sparsealign.recordings.datasets import (COWLEY_README, cowley_v4_files, cowley_v4_stores,
                                             import_dataset, parse_cowley_session_table)
from sparsealign.stimuli.images import load_cowley_v4_images
from sparsealign.stimuli.mirror import default_mirror_dir

MIRROR = default_mirror_dir()
pytestmark = pytest.mark.skipif(not (MIRROR / "SHA256SUMS").is_file(),
                                reason=f"no data mirror at {MIRROR} (SPARSEALIGN_DATA_MIRROR)")


def test_session_table_is_parsed_from_the_authors_readme():
    table = parse_cowley_session_table((MIRROR / COWLEY_README).read_text())
    assert table["190923"] == {"animal": "WE", "split": "test", "n_neurons": 33,
                               "repeats_per_image": 14, "n_images": 1200,
                               "image_types": "normal (1,200)"}
    assert table["211103"]["image_types"].startswith("normal (750), maximizing (750)")


def test_v4_sessions_import_with_raw_repeats_and_image_ids(tmp_path):
    paths = import_dataset("cowley2023_v4", MIRROR, tmp_path, sessions=["210305", "210325"],
                           config={"dataset": "cowley2023_v4"})
    assert sorted(p.name for p in paths) == ["210305.zarr", "210325.zarr", "210325_repeats.zarr"]
    averaged = schema.open_store(tmp_path / "210325.zarr")
    raw = schema.open_store(tmp_path / "210325_repeats.zarr")
    assert averaged["responses"].dims == ("stimulus", "unit")
    assert dict(raw.sizes) == {"stimulus": 640, "unit": 50, "repeat": 10}
    source = np.load(MIRROR / cowley_v4_files("210325")["raw"])
    np.testing.assert_array_equal(raw["responses"].values, np.moveaxis(source, 0, 1))
    assert np.isnan(raw["responses"].values).sum() == np.isnan(source).sum() > 0
    np.testing.assert_allclose(schema.responses(raw), averaged["responses"].values)
    assert averaged.attrs["animal"] == "PE" and averaged.attrs["split"] == "test"
    assert averaged["unit"].values[0] == "210325/00000"
    image_ids, _ = load_cowley_v4_images(MIRROR, sessions=["210325"])
    assert averaged["stimulus"].values.tolist() == image_ids.tolist()
    assert averaged["image_index"].values[:3].tolist() == [1, 2, 3]


def test_an_image_shown_at_two_indices_is_one_stimulus_with_the_mean_response():
    store = cowley_v4_stores(MIRROR, sessions=["210621"])["210621"]
    assert store.sizes["stimulus"] == 1198 and int(store["n_presentations"].sum()) == 1200
    source = np.load(MIRROR / cowley_v4_files("210621")["responses"])
    twice = np.flatnonzero(store["n_presentations"].values == 2)
    first_index = store["image_index"].values[twice[0]]  # images 101 and 536 are one image
    assert first_index == 101
    np.testing.assert_allclose(store["responses"].values[twice[0]],
                               source[:, [100, 535]].mean(axis=1))


@pytest.fixture
def small_mirror(tmp_path):
    """A copy of the mirror's session-210305 files with its own SHA256SUMS."""
    mirror = tmp_path / "mirror"
    files = [COWLEY_README] + [cowley_v4_files("210305")[k] for k in ("images", "responses")]
    lines = []
    for relative in files:
        (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / relative, mirror / relative)
        digest = hashlib.sha256((mirror / relative).read_bytes()).hexdigest()
        lines.append(f"{digest}  ./{relative}")
    (mirror / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return mirror


def test_a_tampered_file_stops_the_import_before_anything_is_written(small_mirror, tmp_path):
    responses = small_mirror / cowley_v4_files("210305")["responses"]
    data = bytearray(responses.read_bytes())
    data[-1] ^= 1
    responses.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(SparsealignError, match=r"responses_210305\.npy: SHA-256 .* differs"):
        import_dataset("cowley2023_v4", small_mirror, out, sessions=["210305"])
    assert not out.exists()


def test_a_missing_file_is_named(small_mirror, tmp_path):
    (small_mirror / cowley_v4_files("210305")["images"]).unlink()
    with pytest.raises(SparsealignError, match=r"images_210305\.zip: missing from the data mirror"):
        import_dataset("cowley2023_v4", small_mirror, tmp_path / "out", sessions=["210305"])


def test_unknown_dataset_and_session_are_errors(tmp_path):
    with pytest.raises(SparsealignError, match="dataset 'allen': unknown"):
        import_dataset("allen", MIRROR, tmp_path)
    with pytest.raises(SparsealignError, match=r"unknown sessions \['201025'\]"):
        import_dataset("cowley2023_v4", MIRROR, tmp_path, sessions=["201025"])


def test_natural_sounds_components_import_with_names_and_categories(tmp_path):
    (path,) = import_dataset("nh2015_natsounds", MIRROR, tmp_path)
    store = schema.open_store(path)
    assert dict(store.sizes) == {"stimulus": 165, "unit": 6}
    assert store["unit"].values.tolist()[-2:] == ["component/speech", "component/music"]
    first = store.isel(stimulus=0)
    assert str(first["stim_name"].values) == "stim28_big_band_music"
    assert str(first["category"].values) == "Music"
    wav = MIRROR / "nh2015_natsounds/wav/stim28_big_band_music.wav"
    digest = hashlib.sha256(wav.read_bytes()).hexdigest()
    assert str(first["stimulus"].values) == f"snd-{digest[:16]}"
