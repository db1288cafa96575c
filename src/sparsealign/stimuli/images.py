"""Image stimuli: JPEGs in zip files → ``(stimulus_ids, uint8 array N×H×W×3)``.

The Cowley et al. (2023) V4 sessions store image ``i`` (1-based) as ``image<i:04d>.jpg``
inside ``images_<session>.zip``; member order is not sorted and one zip nests the files
in a folder, so images are located by the number in their name, never by position.
A stimulus id is the hash of the JPEG bytes; a session can show the same image at two
indices, and then both indices carry the same id.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from sparsealign.errors import fail
from sparsealign.stimuli import content_id
from sparsealign.stimuli.mirror import default_mirror_dir, verify_files

IMAGE_MEMBER = re.compile(r"(?:^|/)image(\d+)\.jpg$")
COWLEY_V4_SESSIONS = ("190923", "190925", "190927", "190928", "190929", "210224", "210225",
                      "210305", "210322", "210325", "210621")


def cowley_v4_image_zip(session: str) -> str:
    """Relative path of a session's image zip inside the data mirror."""
    return f"cowley2023_v4/images/images_{session}.zip"


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Decode image bytes to an H×W×3 uint8 RGB array; ``source`` names it in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise fail(source, f"not a readable image ({exc})", "a JPEG or PNG file") from None


def _indexed_members(zip_path) -> tuple[list[str], list[bytes]]:
    """Names and bytes of the ``image<i>.jpg`` members of a zip, for i = 1 … N."""
    import zipfile

    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise fail(zip_path, f"not a readable zip ({exc})", "a zip of image<i>.jpg files") from None
    with archive:
        members = {}
        for name in archive.namelist():
            match = IMAGE_MEMBER.search(name)
            if match:
                index = int(match.group(1))
                if index in members:
                    raise fail(zip_path, f"image index {index} appears twice "
                                         f"({members[index]}, {name})", "one file per index")
                members[index] = name
        if not members or sorted(members) != list(range(1, len(members) + 1)):
            absent = sorted(set(range(1, max(members, default=0) + 1)) - set(members))
            raise fail(zip_path, f"image indices are not 1…N (missing {absent[:5] or 'all'})",
                       "files image0001.jpg … image<N>.jpg")
        names = [members[i] for i in range(1, len(members) + 1)]
        return names, [archive.read(name) for name in names]


def indexed_jpeg_ids(zip_path) -> np.ndarray:
    """Content ids of a zip's ``image<i>.jpg`` members in index order, without decoding."""
    _, blobs = _indexed_members(zip_path)
    return np.array([content_id(blob, "img") for blob in blobs])


def read_indexed_jpegs(zip_path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``image<i>.jpg`` members of a zip in index order (1, 2, …, N).

    Returns
    -------
    ids : ndarray of str, shape (N,)
        Content id of each index's JPEG; repeated when an image is shown at two indices.
    images : ndarray of uint8, shape (N, H, W, 3)
    """
    names, blobs = _indexed_members(zip_path)
    ids = np.array([content_id(blob, "img") for blob in blobs])
    images = [decode_image(blob, f"{zip_path}:{name}") for name, blob in zip(names, blobs)]
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise fail(zip_path, f"images have different shapes {sorted(shapes)}", "one image size")
    return ids, np.stack(images)


def unique_stimuli(ids, images) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first occurrence of each id, in order of first appearance."""
    ids = np.asarray(ids)
    _, first = np.unique(ids, return_index=True)
    first = np.sort(first)
    return ids[first], np.asarray(images)[first]


def load_cowley_v4_images(mirror_dir=None, sessions=COWLEY_V4_SESSIONS):
    """All distinct images of the given V4 sessions, checksum-verified.

    Parameters
    ----------
    mirror_dir : path, optional
        Data mirror root (default :func:`~sparsealign.stimuli.mirror.default_mirror_dir`).
    sessions : sequence of str
        Session ids; images are ordered by session, then by index, first occurrence kept.

    Returns
    -------
    ids : ndarray of str, shape (N,)
    images : ndarray of uint8, shape (N, 112, 112, 3)
    """
    mirror_dir = Path(mirror_dir) if mirror_dir is not None else default_mirror_dir()
    unknown = sorted(set(sessions) - set(COWLEY_V4_SESSIONS))
    if unknown:
        raise fail("cowley2023_v4", f"unknown sessions {unknown}",
                   f"sessions among {list(COWLEY_V4_SESSIONS)}")
    paths = verify_files(mirror_dir, [cowley_v4_image_zip(s) for s in sessions])
    per_session = [read_indexed_jpegs(path) for path in paths.values()]
    ids = np.concatenate([ids for ids, _ in per_session])
    images = np.concatenate([images for _, images in per_session])
    return unique_stimuli(ids, images)
