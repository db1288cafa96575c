#!/usr/bin/env python
"""Find corrupted data and name it: DVC cache objects, tracked files, Zarr stores, the mirror.

    python scripts/check_integrity.py                      # every check below, in this repo
    python scripts/check_integrity.py --cache              # .dvc/cache objects vs their md5 names
    python scripts/check_integrity.py --tracked            # files vs the md5 in dvc.lock / *.dvc
    python scripts/check_integrity.py --stores results     # every *.zarr opens and validates
    python scripts/check_integrity.py --mirror ../shared/data   # the data mirror vs SHA256SUMS

One line per problem (``<path>: <what is wrong>``) and exit status 1 if there is any;
``ok: …`` and 0 otherwise. DVC itself does not check its cache on checkout: a corrupted
object is copied into the workspace as if it were good, and ``dvc status`` only says
"not in cache". Run ``--tracked`` right after ``dvc pull``/``dvc checkout`` (later, rerun
outputs legitimately differ from dvc.lock until ``dvc commit``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparsealign.provenance import file_md5, file_sha256

CACHE = Path(".dvc/cache/files/md5")



def tracked_outputs(root: Path = Path(".")) -> list[tuple[Path, str, Path]]:
    """(workspace path, recorded md5, the file that records it) from dvc.lock and *.dvc."""
    import yaml

    outs = []
    lock = root / "dvc.lock"
    if lock.exists():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("md5"):
                    outs.append((root / out["path"], out["md5"], lock))
    for dvc_file in sorted(root.rglob("*.dvc")):
        parts = dvc_file.relative_to(root).parts
        if not dvc_file.is_file() or ".dvc" in parts[:-1] or ".git" in parts:
            continue
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            if out.get("md5"):
                outs.append((dvc_file.parent / out["path"], out["md5"], dvc_file))
    return outs


def _manifest(md5_dir: str, cache: Path):
    path = cache / md5_dir[:2] / md5_dir[2:]
    return json.loads(path.read_text()) if path.exists() else None


def check_cache(cache: Path = CACHE, root: Path = Path(".")) -> list[str]:
    """Every cache object's content must hash to its name."""
    users: dict[str, list[str]] = {}
    for path, recorded, _ in tracked_outputs(root):
        users.setdefault(recorded, []).append(str(path))
        if recorded.endswith(".dir"):
            try:
                entries = _manifest(recorded, cache) or []
            except ValueError:
                entries = []
            for entry in entries:
                users.setdefault(entry["md5"], []).append(f"{path}/{entry['relpath']}")
    problems = []
    if not cache.exists():
        return problems
    for obj in sorted(p for p in cache.rglob("*") if p.is_file()):
        if obj.suffix in (".tmp", ".unpacked") or ".tmp" in obj.name:
            continue
        name = obj.parent.name + obj.name
        expected = name.removesuffix(".dir")
        actual = file_md5(obj)
        if actual != expected:
            used = users.get(name) or users.get(expected) or []
            where = f" (the cached copy of {', '.join(sorted(used)[:3])})" if used else ""
            problems.append(f"{obj}: content md5 {actual} differs from its name {expected}{where}; "
                            "expected an intact object (delete it and `dvc pull`, or `dvc add` again)")
    return problems


def check_tracked(cache: Path = CACHE, root: Path = Path(".")) -> tuple[list[str], int]:
    """Workspace files against the md5 DVC recorded (file by file through .dir manifests)."""
    problems, checked = [], 0
    for path, recorded, source in tracked_outputs(root):
        if not path.exists():
            problems.append(f"{path}: missing; expected the content recorded in {source}")
            continue
        if not recorded.endswith(".dir"):
            checked += 1
            actual = file_md5(path)
            if actual != recorded:
                problems.append(f"{path}: md5 {actual} differs from {recorded} in {source}")
            continue
        manifest = _manifest(recorded, cache)
        if manifest is None:
            problems.append(f"{path}: manifest {recorded} not in the local cache; "
                            "expected it after `dvc pull` (cannot check file by file)")
            continue
        for entry in manifest:
            file = path / entry["relpath"]
            checked += 1
            if not file.exists():
                problems.append(f"{file}: missing; expected the content recorded in {source}")
            elif (actual := file_md5(file)) != entry["md5"]:
                problems.append(f"{file}: md5 {actual} differs from {entry['md5']} in {source}")
    return problems, checked


def check_stores(roots) -> tuple[list[str], int]:
    """Every Zarr store under ``roots`` opens, decodes and passes the schema."""
    from sparsealign import schema
    from sparsealign.errors import SparsealignError

    problems, checked = [], 0
    for root in roots:
        for store in sorted(Path(root).rglob("*.zarr")):
            if not store.is_dir() or ".tmp-" in str(store) or ".old-" in str(store):
                continue
            checked += 1
            try:
                schema.open_store(store, load=True)
            except SparsealignError as error:
                problems.append(str(error))
            except Exception as error:  # a decoder failing on corrupted chunk bytes
                problems.append(f"{store}: unreadable ({type(error).__name__}: {error}); "
                                "expected a store written by sparsealign")
    return problems, checked


def check_mirror(mirror: Path) -> tuple[list[str], int]:
    """Every file listed in the mirror's SHA256SUMS exists and matches."""
    from sparsealign.stimuli.mirror import read_checksums

    problems, sums = [], read_checksums(mirror)
    for rel, digest in sorted(sums.items()):
        path = mirror / rel
        if not path.exists():
            problems.append(f"{path}: missing; expected the file listed in SHA256SUMS")
        elif (actual := file_sha256(path)) != digest:
            problems.append(f"{path}: SHA-256 {actual[:16]}… differs from SHA256SUMS ({digest[:16]}…)")
    return problems, len(sums)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", action="store_true", help="DVC cache objects vs their names")
    parser.add_argument("--tracked", action="store_true", help="workspace vs dvc.lock / *.dvc")
    parser.add_argument("--stores", nargs="*", metavar="DIR", help="open every *.zarr under DIR")
    parser.add_argument("--mirror", metavar="DIR", help="the data mirror vs its SHA256SUMS")
    args = parser.parse_args(argv)
    everything = not (args.cache or args.tracked or args.stores is not None or args.mirror)
    problems, counts = [], []
    if args.cache or everything:
        found = check_cache()
        problems += found
        counts.append(f"{sum(1 for p in CACHE.rglob('*') if p.is_file()) if CACHE.exists() else 0} cache objects")
    if args.tracked or everything:
        found, n = check_tracked()
        problems += found
        counts.append(f"{n} tracked files")
    if args.stores is not None or everything:
        roots = args.stores or [p for p in Path(".").glob("results*") if p.is_dir()]
        found, n = check_stores(roots)
        problems += found
        counts.append(f"{n} stores")
    if args.mirror:
        found, n = check_mirror(Path(args.mirror))
        problems += found
        counts.append(f"{n} mirror files")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("ok: " + ", ".join(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
