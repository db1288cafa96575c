"""The one way sparsealign writes a file or folder: to ``<path>.tmp-<pid>``, then rename.

A reader sees the old output or the new one, never half of either. A killed writer
leaves only ``*.tmp-<pid>`` (or ``*.old-<pid>``) names, which
:func:`sparsealign.launcher.sweep_stale_temp` removes once that pid is dead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

TEMP_SUFFIXES = ("tmp", "old")


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """``<path>.<kind>-<pid>``: the temporary name this process uses for ``path``."""
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path`` through; rename it into place on success.

    Works for files and folders (a Zarr store). On an exception the temporary is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and path.exists():
        old = temp_name(path, "old")
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
