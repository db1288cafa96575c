"""Integrity: raw inputs are checked by hash before any job reads them; a corrupted DVC
cache object or store is found and named by scripts/check_integrity.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, SNAKEMAKE, job_env, workdir

pytestmark = pytest.mark.crash

DVC = [sys.executable, "-m", "dvc"]
CHECK = [sys.executable, str(ROOT / "scripts" / "check_integrity.py")]


def _sh(cmd, cwd, env=None, ok=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if ok:
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def _dvc_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    _sh(["git", "init", "-q"], path)
    _sh(DVC + ["init", "-q"], path)
    return path


def _flip_byte(path: Path, offset: int = -1) -> None:
    os.chmod(path, 0o644)  # DVC makes cache objects read-only
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def toy_only_config(work: Path, name: str = "t", **overrides) -> str:
    """config/<name>.yaml: the smoke config with only the toy experiment (the others need
    the data mirror and real networks), results in results-<name>. ``sae={…}`` updates the
    toy experiment's SAE block; other keys update the toy system."""
    config = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    config.update(results_dir=f"results-{name}", mlflow_experiment=f"sparsealign-{name}")
    config["experiments"] = {"toy": config["experiments"]["toy"]}
    config["systems"] = {"toy": config["systems"]["toy"]}
    config["stimuli"] = {"toy_features": config["stimuli"]["toy_features"]}
    for key, value in overrides.items():
        if key == "sae":
            config["experiments"]["toy"]["sae"].update(value)
        else:
            config["systems"]["toy"][key] = value
    (work / "config" / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return f"config/{name}.yaml"


# --------------------------------------------------------------------------- raw inputs
def test_raw_inputs_are_checked_file_by_file_against_dvc(tmp_path, monkeypatch):
    from sparsealign.errors import SparsealignError
    from sparsealign.launcher import verify_raw_inputs

    repo = _dvc_repo(tmp_path / "repo")
    raw = repo / "data" / "raw"
    (raw / "set").mkdir(parents=True)
    np.save(raw / "responses.npy", np.arange(100.0))
    for name in ("a.txt", "b.txt"):
        (raw / "set" / name).write_text(f"stimulus {name}\n")
    _sh(DVC + ["add", "-q", "data/raw/responses.npy", "data/raw/set"], repo)
    monkeypatch.chdir(repo)

    hashes = verify_raw_inputs()
    assert set(hashes) == {"data/raw/responses.npy", "data/raw/set"}

    (raw / "set" / "b.txt").write_text("tampered\n")
    with pytest.raises(SparsealignError, match=r"^data/raw/set/b\.txt: md5 \w+ differs from \w+; "
                                               r"expected the content recorded in data/raw/set\.dvc"):
        verify_raw_inputs()
    # Without the manifest in the cache the directory is checked as a whole.
    manifest = next(Path(".dvc/cache/files/md5").rglob("*.dir"))
    manifest.unlink()
    with pytest.raises(SparsealignError, match=r"^data/raw/set: directory md5 .* differs"):
        verify_raw_inputs()
    (raw / "set" / "b.txt").write_text("stimulus b.txt\n")
    verify_raw_inputs()
    _flip_byte(raw / "responses.npy")
    with pytest.raises(SparsealignError, match=r"^data/raw/responses\.npy: md5"):
        verify_raw_inputs()


def test_tampered_raw_input_stops_the_pipeline_before_any_job(tmp_path):
    work = workdir(tmp_path)
    _dvc_repo(work)
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "stimuli.csv").write_text("id,value\ns0,1\n")
    _sh(DVC + ["add", "-q", "data/raw/stimuli.csv"], work)
    recorded = _md5(raw / "stimuli.csv")
    (raw / "stimuli.csv").write_text("id,value\ns0,2\n")
    config = toy_only_config(work)
    proc = _sh(SNAKEMAKE + ["--cores", "1", "--configfile", config], work, job_env(work), ok=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data/raw/stimuli.csv: md5 {_md5(raw / 'stimuli.csv')} differs from "
                      f"{recorded}; expected the "
                      "content recorded in data/raw/stimuli.csv.dvc (`dvc checkout data/raw/stimuli.csv` "
                      "or `dvc pull`)"]
    assert not (work / "results-t").exists()


def _md5(path):
    import hashlib

    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- cache, stores
@pytest.fixture
def tracked_results(tmp_path):
    """A DVC repo whose results/ (two stores and a table) is tracked and cached."""
    from sparsealign import schema

    repo = _dvc_repo(tmp_path / "repo")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        ds = schema.make_store(rng.normal(size=(50, 6)), [f"s{i:03d}" for i in range(50)],
                               [f"u/{j:05d}" for j in range(6)], source=name, layer="x",
                               kind="neurons")
        schema.save_store(ds, repo / "results" / f"{name}.zarr")
    (repo / "results" / "table.csv").write_text("metric,mean\nridge,0.5\n")
    _sh(DVC + ["add", "-q", "results"], repo)
    proc = _sh(CHECK, repo)
    assert proc.stdout.startswith("ok: ")
    return repo


def test_corrupted_cache_object_is_named_with_the_file_it_holds(tracked_results):
    repo = tracked_results
    chunk = next((repo / "results" / "a.zarr" / "responses").rglob("c/*/*"))
    obj = repo / ".dvc" / "cache" / "files" / "md5"
    digest = _md5(chunk)
    cached = obj / digest[:2] / digest[2:]
    _flip_byte(cached)
    proc = _sh(CHECK + ["--cache"], repo, ok=False)
    assert proc.returncode == 1
    rel = chunk.relative_to(repo).as_posix()
    assert proc.stdout.splitlines() == [
        f".dvc/cache/files/md5/{digest[:2]}/{digest[2:]}: content md5 {_md5(cached)} differs "
        f"from its name {digest} (the cached copy of {rel}); expected an intact object "
        "(delete it and `dvc pull`, or `dvc add` again)"]


def test_corrupted_store_is_named_by_file_and_by_store(tracked_results):
    repo = tracked_results
    chunk = next((repo / "results" / "b.zarr" / "responses").rglob("c/*/*"))
    _flip_byte(chunk, offset=len(chunk.read_bytes()) // 2)
    proc = _sh(CHECK + ["--tracked"], repo, ok=False)
    rel = chunk.relative_to(repo).as_posix()
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{rel}: md5 {_md5(chunk)} differs from {_recorded_md5(repo, rel)} in results.dvc"]
    chunk.write_bytes(chunk.read_bytes()[:7])  # a truncated chunk no longer decodes
    proc = _sh(CHECK + ["--stores", "results"], repo, ok=False)
    assert proc.returncode == 1
    assert proc.stdout.startswith("results/b.zarr: ")


def _recorded_md5(repo: Path, rel: str) -> str:
    import json

    out = yaml.safe_load((repo / "results.dvc").read_text())["outs"][0]["md5"]
    manifest = repo / ".dvc" / "cache" / "files" / "md5" / out[:2] / out[2:]
    entries = {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text())}
    return entries[rel.removeprefix("results/")]
