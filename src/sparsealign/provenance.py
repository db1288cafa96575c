"""Where an output came from: hashes of files and configs, and the code's git state.

The one home of these helpers: stores (:mod:`sparsealign.schema`), MLflow runs
(:mod:`sparsealign.tracking`), raw-input checks and the scripts all hash the same way.
Standard library only, so any module may import it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from sparsealign import __version__


def file_md5(path) -> str:
    """md5 of a file's bytes (the hash DVC records)."""
    return _file_digest(path, "md5")


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (the hash the data mirror's ``SHA256SUMS`` records)."""
    return _file_digest(path, "sha256")


def _file_digest(path, algorithm: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def path_md5(path, normalise=None) -> str:
    """md5 of a file, or of a directory's sorted (relative path, file md5) listing.

    ``normalise(file, bytes) -> bytes``, if given, rewrites each file's bytes before they
    are hashed (to compare outputs while ignoring fields that name the code version).
    """
    path = Path(path)

    def md5(file: Path) -> str:
        if normalise is None:
            return file_md5(file)
        return hashlib.md5(normalise(file, file.read_bytes())).hexdigest()

    if path.is_file():
        return md5(path)
    digest = hashlib.md5()
    # Snakemake drops an empty `.snakemake_timestamp` into directory outputs after the job.
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp"):
        digest.update(f"{file.relative_to(path).as_posix()}:{md5(file)}\n".encode())
    return digest.hexdigest()


def config_sha(obj) -> str:
    """Short, stable hash of a JSON-able config slice (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config → ``{"a.b.c": "value"}`` strings, as MLflow params want."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def _git(*args, cwd=None) -> str:
    """Stripped stdout of ``git args…``; raises OSError or CalledProcessError."""
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                          cwd=cwd).stdout.strip()


def git_state() -> dict:
    """``git_commit`` and ``git_dirty`` of the working tree (``unknown`` outside git)."""
    try:
        return {"git_commit": _git("rev-parse", "HEAD"),
                "git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no")))}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def created_by() -> str:
    """Package version plus the git commit of the package's checkout, if there is one."""
    try:
        commit = _git("rev-parse", "--short=12", "HEAD", cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"sparsealign {__version__} ({commit})"
