"""The offline data mirror: where it is, and checking its files against ``SHA256SUMS``.

The mirror (``../shared/data`` beside the repository by default) holds real stimuli,
recordings and model weights exactly as published; every reader verifies the files it
uses before trusting a number from them.
"""

from __future__ import annotations

import os
from pathlib import Path

from sparsealign.errors import fail
from sparsealign.provenance import file_sha256

MIRROR_ENV = "SPARSEALIGN_DATA_MIRROR"
CHECKSUM_FILE = "SHA256SUMS"


def default_mirror_dir(configured=None) -> Path:
    """The one answer to "where is the data mirror?".

    ``$SPARSEALIGN_DATA_MIRROR`` if set (the data's location is not science), else the
    config's ``data_mirror`` (``configured``), else ``<repository>/../shared/data``.
    """
    if os.environ.get(MIRROR_ENV):
        return Path(os.environ[MIRROR_ENV])
    if configured:
        return Path(configured)
    repository = Path(__file__).resolve().parents[3]
    return repository.parent / "shared" / "data"


def read_checksums(mirror_dir) -> dict[str, str]:
    """Map each relative path listed in ``<mirror_dir>/SHA256SUMS`` to its SHA-256 digest.

    Raises
    ------
    SparsealignError
        If the file is missing, or naming ``SHA256SUMS:<line>`` for a line that is not
        ``<64 hex digits>  <path>``.
    """
    sums_path = Path(mirror_dir) / CHECKSUM_FILE
    if not sums_path.is_file():
        raise fail(sums_path, "no such file", "the mirror's checksum list (sha256sum format)")
    data = sums_path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise fail(f"{sums_path}:{line}", f"not UTF-8 text ({exc.reason})",
                   "the mirror's checksum list (sha256sum format)") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not _is_sha256(fields[0]):
            raise fail(f"{sums_path}:{number}", f"malformed line {line[:80]!r}",
                       "'<64 hex digits>  <relative path>' (sha256sum format)")
        digest, name = fields
        sums[name.lstrip("*").removeprefix("./")] = digest.lower()
    return sums


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def verify_files(mirror_dir, relative_paths) -> dict[str, Path]:
    """Check files of the mirror against ``SHA256SUMS``; return relative path → absolute path.

    Raises
    ------
    SparsealignError
        Naming the first file that is not listed, missing, or whose digest differs.
    """
    mirror_dir = Path(mirror_dir)
    sums = read_checksums(mirror_dir)
    verified = {}
    for relative in relative_paths:
        path = mirror_dir / relative
        if relative not in sums:
            raise fail(mirror_dir / CHECKSUM_FILE, f"no checksum for {relative}",
                       "every file the pipeline reads to be listed")
        if not path.is_file():
            raise fail(path, "missing from the data mirror",
                       f"the file listed in {CHECKSUM_FILE} (copy it from the original source)")
        actual = file_sha256(path)
        if actual != sums[relative]:
            raise fail(path, f"SHA-256 {actual[:16]}… differs from {CHECKSUM_FILE} "
                             f"({sums[relative][:16]}…)",
                       "the file as published (copy it again from the original source)")
        verified[relative] = path
    return verified
