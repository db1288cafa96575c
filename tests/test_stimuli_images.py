"""Image stimuli: zips of image<i>.jpg → (content ids, uint8 arrays), in index order."""

import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from sparsealign.errors import SparsealignError
from sparsealign.stimuli import content_id
from sparsealign.stimuli.images import (indexed_jpeg_ids, load_cowley_v4_images,
                                        read_indexed_jpegs, unique_stimuli)
from sparsealign.stimuli.mirror import default_mirror_dir

MIRROR = default_mirror_dir()
needs_mirror = pytest.mark.skipif(not (MIRROR / "SHA256SUMS").is_file(),
                                  reason=f"no data mirror at {MIRROR} (SPARSEALIGN_DATA_MIRROR)")


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_content_id_is_a_prefixed_sha256_prefix():
    assert content_id(b"abc", "img") == "img-ba7816bf8f01cfea"


def test_images_come_in_index_order_whatever_the_member_order_and_folder(tmp_path):
    members = {"set/image0003.jpg": jpeg(30), "set/": b"", "set/image0001.jpg": jpeg(10),
               "set/image0002.jpg": jpeg(20)}
    ids, images = read_indexed_jpegs(write_zip(tmp_path / "s.zip", members))
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_allclose(images[:, 0, 0, 0], [10, 20, 30], atol=2)
    assert ids.tolist() == [content_id(jpeg(v), "img") for v in (10, 20, 30)]
    assert indexed_jpeg_ids(tmp_path / "s.zip").tolist() == ids.tolist()


def test_an_image_shown_twice_gets_one_id_and_unique_keeps_first(tmp_path):
    members = {"image0001.jpg": jpeg(10), "image0002.jpg": jpeg(20), "image0003.jpg": jpeg(10)}
    ids, images = read_indexed_jpegs(write_zip(tmp_path / "s.zip", members))
    assert ids[0] == ids[2] != ids[1]
    unique_ids, unique_images = unique_stimuli(ids, images)
    assert unique_ids.tolist() == [ids[0], ids[1]]
    np.testing.assert_array_equal(unique_images, images[:2])


@pytest.mark.parametrize("members, problem", [
    ({"image0001.jpg": b"", "image0003.jpg": b""}, "missing [2]"),
    ({"a/image0001.jpg": b"", "b/image0001.jpg": b""}, "appears twice"),
    ({"readme.txt": b"x"}, "not 1…N"),
    ({"image0001.jpg": b"not a jpeg"}, "not a readable image"),
])
def test_malformed_zips_are_errors_naming_the_zip(tmp_path, members, problem):
    path = write_zip(tmp_path / "bad.zip", members)
    with pytest.raises(SparsealignError, match=re.escape(problem)) as error:
        read_indexed_jpegs(path)
    assert "bad.zip" in str(error.value)


def test_a_file_that_is_not_a_zip_is_an_error(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"nope")
    with pytest.raises(SparsealignError, match="x.zip: not a readable zip"):
        read_indexed_jpegs(tmp_path / "x.zip")


@needs_mirror
def test_cowley_session_images_are_verified_unique_112_pixel_rgb():
    ids, images = load_cowley_v4_images(MIRROR, sessions=["210305"])
    assert images.shape == (400, 112, 112, 3) and images.dtype == np.uint8
    assert len(set(ids)) == 400 and all(i.startswith("img-") for i in ids)


@needs_mirror
def test_the_same_image_in_two_sessions_is_one_stimulus():
    # 600 of the 640 images of session 210325 were also shown in session 210322.
    ids, _ = load_cowley_v4_images(MIRROR, sessions=["210322", "210325"])
    assert len(ids) == 1200 + 640 - 600


def test_unknown_session_is_an_error():
    with pytest.raises(SparsealignError, match="unknown sessions"):
        load_cowley_v4_images(MIRROR, sessions=["999999"])
