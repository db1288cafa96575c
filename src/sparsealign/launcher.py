"""What a pipeline does before its first job, and a launcher for executors that need it.

:func:`run_snakemake` (what ``sparsealign run`` calls) makes a run the only one in its
working directory and recovers from a killed one: rerunning the same command after a
crash finishes the work, while a live concurrent run is refused.

:func:`prepare_workspace` runs in Snakemake's ``onstart`` (through ``start_tracking`` in
``workflow/rules/common.smk``): it removes the temporary files that killed jobs left
behind and checks the DVC-tracked raw inputs against their recorded md5 before any job
reads them.

``python -m sparsealign.launcher [--experiment NAME] -- snakemake …`` starts Snakemake
with the MLflow parent run already open. The Kubernetes executor copies the variables
named by ``--envvars`` into a secret when it starts, which is before Snakemake's
``onstart``, and its pods share no filesystem with the submitting machine: neither the
environment set in ``onstart`` nor :data:`~sparsealign.tracking.PARENT_RUN_FILE` reaches
them. The launcher therefore runs the pre-flight check, reaps orphans and creates the
parent first, exports ``SPARSEALIGN_PARENT_RUN_ID`` and ``MLFLOW_TRACKING_URI``, runs
Snakemake (``onstart`` adopts the parent), and ends the parent by Snakemake's exit status
if Snakemake could not. SLURM needs no launcher (``sbatch --export=ALL``) but works with it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sparsealign.atomic import write_text
from sparsealign.errors import SparsealignError, fail
from sparsealign.provenance import file_md5
from sparsealign.tracking.reaper import pid_alive

RAW_DIR = Path("data/raw")
DVC_CACHE = Path(".dvc/cache/files/md5")
HASH_CACHE = Path(".snakemake/sparsealign_raw_md5.json")
RUN_LOCK = Path(".snakemake/sparsealign.run.lock")
SNAKEMAKE_LOCKS = Path(".snakemake/locks")
# Temporary names of the atomic writes (schema.save_store, sae.save_sae, the trainer's
# checkpoint): `<name>.tmp-<pid>` and `<name>.old-<pid>`.
TEMP_NAME = re.compile(r"\.(?:tmp|old)-(\d+)$")
DRY_FLAGS = {"-n", "--dry-run", "--dryrun", "--lint", "--unlock", "--list", "-l",
             "--list-rules", "--summary", "-S", "--detailed-summary", "-D", "--dag",
             "--rulegraph", "--filegraph", "--cleanup-metadata", "--touch", "-t", "--help", "-h"}


# --------------------------------------------------------------------------- onstart
def prepare_workspace(results_dir, local: bool = True) -> dict:
    """Sweep stale temporary files (local runs only), verify raw inputs.

    Returns ``{"dvc.<path>": md5}`` for the raw inputs, to tag the parent run with.
    """
    if local:
        sweep_stale_temp(results_dir)
    return {f"dvc.{path}": md5 for path, md5 in verify_raw_inputs().items()}



def sweep_stale_temp(root) -> list[Path]:
    """Remove ``*.tmp-<pid>`` / ``*.old-<pid>`` under ``root`` whose writer is dead.

    A job killed mid-write leaves its temporary copy behind; the rerun writes under a new
    pid, so without this the leftovers would pile up in the results (and in DVC). Only
    dead pids on this machine are swept, so a concurrent run's live writes are safe; it
    is not called for remote executors, whose writers' pids are not local.
    """
    removed = []
    import shutil

    for folder, dirs, files in os.walk(root):
        for name in list(dirs) + files:
            match = TEMP_NAME.search(name)
            if match and not pid_alive(int(match.group(1))):
                path = Path(folder) / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed.append(path)
        # Stores and swept folders hold no temporaries of their own.
        dirs[:] = [d for d in dirs if not d.endswith(".zarr") and not TEMP_NAME.search(d)]
    return removed



class _HashCache:
    """md5 by (size, mtime, ctime, inode), as DVC's state does: unchanged files are not re-read.

    ctime cannot be set back by a writer, so any rewrite of a file invalidates its entry.
    """

    def __init__(self, path: Path = HASH_CACHE, use: bool = True):
        self.path, self.use = path, use
        try:
            self.entries = json.loads(path.read_text()) if use and path.exists() else {}
        except (OSError, ValueError):
            self.entries = {}

    def md5(self, path: Path) -> str:
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(str(path))
        if self.use and entry and entry[0] == key:
            return entry[1]
        digest = file_md5(path)
        self.entries[str(path)] = [key, digest]
        return digest

    def save(self) -> None:
        if self.use:
            write_text(self.path, json.dumps(self.entries))


def verify_raw_inputs(root=RAW_DIR, cache_dir=DVC_CACHE, use_hash_cache: bool = True) -> dict:
    """Check every DVC-tracked output under ``root`` against the md5 its ``.dvc`` records.

    Files are compared directly; directories file by file against DVC's ``.dir`` manifest
    (from the local cache), or as a whole against the directory hash if the manifest is
    not cached. Returns ``{path: recorded md5}``; raises a one-line error naming the first
    file that is missing or differs.
    """
    import yaml

    root = Path(root)
    hashes = {}
    if not root.exists():
        return hashes
    cache = _HashCache(use=use_hash_cache)
    try:
        for dvc_file in sorted(p for p in root.rglob("*.dvc") if p.is_file()):
            spec = yaml.safe_load(dvc_file.read_text()) or {}
            for out in spec.get("outs", []):
                expected = out.get("md5")
                if not expected:
                    continue
                path = dvc_file.parent / out["path"]
                restore = f"the content recorded in {dvc_file} (`dvc checkout {path}` or `dvc pull`)"
                if not path.exists():
                    raise fail(path, "missing", restore)
                if expected.endswith(".dir"):
                    _verify_dir(path, expected, Path(cache_dir), cache, restore)
                else:
                    actual = cache.md5(path)
                    if actual != expected:
                        raise fail(path, f"md5 {actual} differs from {expected}", restore)
                hashes[str(path)] = expected
    finally:
        cache.save()
    return hashes


def _verify_dir(path: Path, expected: str, cache_dir: Path, cache: _HashCache, restore: str):
    files = sorted(p for p in path.rglob("*") if p.is_file())
    actual = {p.relative_to(path).as_posix(): p for p in files}
    manifest_file = cache_dir / expected[:2] / expected[2:]
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        for entry in manifest:
            file = path / entry["relpath"]
            if entry["relpath"] not in actual:
                raise fail(file, "missing", restore)
            md5 = cache.md5(file)
            if md5 != entry["md5"]:
                raise fail(file, f"md5 {md5} differs from {entry['md5']}", restore)
        extra = sorted(set(actual) - {e["relpath"] for e in manifest})
        if extra:
            raise fail(path / extra[0], f"not in the DVC manifest of {path} "
                       f"({len(extra)} unexpected file(s))", restore)
        return
    # No manifest cached: DVC's directory hash is the md5 of its JSON listing.
    listing = [{"md5": cache.md5(p), "relpath": rel} for rel, p in sorted(actual.items())]
    md5 = hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"
    if md5 != expected:
        raise fail(path, f"directory md5 {md5} differs from {expected}", restore)


# --------------------------------------------------------------------------- one run at a time
def run_snakemake(command: list[str]) -> int:
    """Run ``command`` (Snakemake, or the launcher before it) as the only run in this directory.

    The run holds an exclusive ``flock`` on :data:`RUN_LOCK` (its pid inside) while it
    lives; the kernel drops it when the holder dies, even on SIGKILL. A second run that
    finds it held is refused: one line naming the holder's pid, exit status 2. Holding it
    proves that no other sparsealign run is alive, so Snakemake's lock, when one is left,
    belongs to a killed run, unless a Snakemake started by hand works here: that one is
    refused the same way; otherwise the stale lock is cleared (``--unlock``) and the outputs
    that killed jobs left incomplete are recomputed (``--rerun-incomplete``). Commands
    that run no job (:data:`DRY_FLAGS`) run as they are.
    """
    if DRY_FLAGS & set(command):
        return _call(command)
    RUN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _refuse(RUN_LOCK, "another sparsealign run", _holder())
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        if SNAKEMAKE_LOCKS.is_dir() and any(SNAKEMAKE_LOCKS.iterdir()):
            pid = _live_snakemake()
            if pid is not None:
                return _refuse(SNAKEMAKE_LOCKS, "a Snakemake run", pid)
            unlock = subprocess.run(_with_flag(command, "--unlock"), capture_output=True, text=True)
            if unlock.returncode:
                sys.stderr.write(unlock.stdout + unlock.stderr)
                return unlock.returncode
            print(f"[sparsealign] {SNAKEMAKE_LOCKS}: cleared the lock of a run that was killed; "
                  "its unfinished outputs are recomputed", file=sys.stderr, flush=True)
        return _call(_with_flag(command, "--rerun-incomplete"))


def _refuse(path: Path, who: str, pid) -> int:
    print(f"error: {path}: {who} (pid {pid}) is using this working directory; "
          "wait for it to end or stop it", file=sys.stderr)
    return 2


def _holder(wait_s: float = 2.0) -> str:
    """The pid in :data:`RUN_LOCK` (its holder writes it just after taking the lock)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pid = RUN_LOCK.read_text().strip()
        except OSError:
            pid = ""
        if pid or time.monotonic() > deadline:
            return pid or "unknown"
        time.sleep(0.05)


def _live_snakemake() -> int | None:
    """pid of a live Snakemake process whose working directory is this one, if any."""
    import psutil

    here = os.getcwd()
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.pid != os.getpid() and proc.info["cwd"] == here and \
                any(Path(arg).name == "snakemake" for arg in proc.info["cmdline"] or []):
            return proc.pid
    return None


def _with_flag(command: list[str], flag: str) -> list[str]:
    """``command`` with ``flag`` right after its ``snakemake`` (before any target or ``--``)."""
    if flag in command:
        return list(command)
    at = next((i + 1 for i, arg in enumerate(command) if Path(arg).name == "snakemake"), len(command))
    return [*command[:at], flag, *command[at:]]


def _call(command: list[str]) -> int:
    """Run ``command`` and wait; SIGTERM is passed on to it.

    SIGINT is ignored here while it runs: Ctrl-C reaches the whole foreground process
    group, so Snakemake gets it itself and stops its jobs cleanly, once.
    """
    process = subprocess.Popen(command)
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _: process.send_signal(signum)),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------- launcher
def _experiment_from(command: list[str]) -> str:
    """``mlflow_experiment`` of the config Snakemake will see (config.yaml + --configfile)."""
    import yaml

    files, overrides, current = [Path("config/config.yaml")], {}, None
    for arg in command:
        if arg.startswith("-"):
            current = arg.split("=", 1)[0]
            if "=" in arg and current in ("--configfile", "--configfiles"):
                files.append(Path(arg.split("=", 1)[1]))
            continue
        if current in ("--configfile", "--configfiles"):
            files.append(Path(arg))
        elif current == "--config" and "=" in arg:
            key, value = arg.split("=", 1)
            overrides[key] = value
    name = "sparsealign"
    for file in files:
        if file.is_file():
            name = (yaml.safe_load(file.read_text()) or {}).get("mlflow_experiment", name)
    return overrides.get("mlflow_experiment", name)


def main(argv=None) -> int:
    from sparsealign import tracking

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m sparsealign.launcher",
        description="Open the MLflow parent run, then run Snakemake (the command after --).")
    parser.add_argument("--experiment", help="MLflow experiment (default: the config's mlflow_experiment)")
    if "--" not in argv:
        parser.error("give the Snakemake command after --, e.g. -- snakemake --workflow-profile "
                     "workflow/profiles/kubernetes")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    if not command:
        parser.error("no command after --")
    if command[0] == "snakemake":
        command = [sys.executable, "-m", "snakemake", *command[1:]]
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
    if not tracking.enabled() or DRY_FLAGS & set(command):
        # Nothing will run: no parent, but the profile's --envvars must still resolve.
        os.environ.setdefault(tracking.PARENT_ENV, "")
        return subprocess.call(command)
    try:
        run_id = tracking.open_launcher_parent(args.experiment or _experiment_from(command))
    except SparsealignError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.environ[tracking.PARENT_ENV] = run_id
    code = _call(command)
    tracking.close_if_running(run_id, "FINISHED" if code == 0 else "FAILED")
    return code


if __name__ == "__main__":
    sys.exit(main())
