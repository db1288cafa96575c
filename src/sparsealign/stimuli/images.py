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


# dataset → (its sessions, the relative mirror path of a session's image zip)
IMAGE_SESSION_DATASETS = {"cowley2023_v4": (COWLEY_V4_SESSIONS, cowley_v4_image_zip)}


def session_image_files(dataset: str, sessions) -> list[str]:
    """Relative mirror paths of the image zips of ``sessions`` of ``dataset``."""
    if dataset not in IMAGE_SESSION_DATASETS:
        raise fail(f"image dataset {dataset!r}", "unknown",
                   f"one of {sorted(IMAGE_SESSION_DATASETS)}")
    known, zip_of = IMAGE_SESSION_DATASETS[dataset]
    unknown = sorted(set(sessions) - set(known))
    if unknown:
        raise fail(dataset, f"unknown sessions {unknown}", f"sessions among {list(known)}")
    return [zip_of(s) for s in sessions]


def load_session_images(dataset: str, sessions, mirror_dir=None):
    """All distinct images of ``sessions`` of a mirror dataset, checksum-verified.

    Returns ``(ids, images)``: images ordered by session, then by index, first occurrence
    of each content id kept.
    """
    mirror_dir = Path(mirror_dir) if mirror_dir is not None else default_mirror_dir()
    paths = verify_files(mirror_dir, session_image_files(dataset, sessions))
    per_session = [read_indexed_jpegs(path) for path in paths.values()]
    ids = np.concatenate([ids for ids, _ in per_session])
    images = np.concatenate([images for _, images in per_session])
    return unique_stimuli(ids, images)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_files(path: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every image in a folder or zip, sorted by name."""
    import zipfile

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return [(p.relative_to(path).as_posix(), p.read_bytes()) for p in files]
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist()
                           if Path(n).suffix.lower() in IMAGE_SUFFIXES and not n.startswith("__MACOSX"))
            return [(n, archive.read(n)) for n in names]
    except FileNotFoundError:
        raise fail(path, "no such folder or zip", "a folder or zip of JPEG/PNG images") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise fail(path, f"not a folder or readable zip ({exc})",
                   "a folder or zip of JPEG/PNG images") from None


def _ids_from_csv(csv_path: Path, names: list[str]) -> list[str]:
    import csv

    try:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise fail(csv_path, "no such file", "a CSV with columns file,stimulus_id") from None
    if not rows or not {"file", "stimulus_id"} <= set(rows[0]):
        raise fail(csv_path, f"columns {list(rows[0]) if rows else []}",
                   "a CSV with columns file,stimulus_id")
    by_file = {row["file"]: row["stimulus_id"] for row in rows}
    missing = [n for n in names if n not in by_file]
    if missing:
        raise fail(csv_path, f"no stimulus_id for {len(missing)} images (first: {missing[0]})",
                   "one row per image file")
    return [by_file[n] for n in names]


def load_image_folder(path, ids_csv=None, max_stimuli=None):
    """Images of a folder (searched recursively) or zip, sorted by file name.

    A stimulus id is the file name without its suffix (``cat_01.jpg`` → ``cat_01``), or
    the ``stimulus_id`` of the file's row in ``ids_csv`` (columns ``file,stimulus_id``,
    ``file`` relative to the folder). Returns ``(ids, images)``, images a list of
    H×W×3 uint8 arrays (sizes may differ: the model's preprocess decides).
    """
    path = Path(path)
    files = _image_files(path)
    if not files:
        raise fail(path, "holds no .jpg, .jpeg or .png files", "a folder or zip of images")
    files = files[:max_stimuli] if max_stimuli else files
    names = [name for name, _ in files]
    ids = _ids_from_csv(Path(ids_csv), names) if ids_csv else [Path(n).stem for n in names]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise fail(ids_csv or path, f"stimulus id {duplicated[0]!r} names several images",
                   "one id per image (rename the files or give ids_csv)")
    images = [decode_image(blob, f"{path}:{name}") for name, blob in files]
    return np.array(ids, dtype=object), images


def load_cowley_v4_images(mirror_dir=None, sessions=COWLEY_V4_SESSIONS):
    """All distinct images of the given V4 sessions (:func:`load_session_images`)."""
    return load_session_images("cowley2023_v4", sessions, mirror_dir)
