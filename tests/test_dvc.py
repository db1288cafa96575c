"""DVC round trip: push the smoke results, pull them into a fresh clone, recompute nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SNAKEMAKE

DVC = [sys.executable, "-m", "dvc"]
DVC_YAML = """stages:
  pipeline:
    cmd: snakemake --cores 1 --configfile config/smoke.yaml
    deps:
      - Snakefile
      - workflow
      - config/smoke.yaml
    outs:
      - data/raw:
          persist: true
      - results-smoke:
          persist: true
"""


def _sh(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.e2e
def test_push_then_fresh_clone_pulls_and_recomputes_nothing(smoke_run, tmp_path):
    from sparsealign.provenance import path_md5

    work, env, _ = smoke_run
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    shutil.copytree(work, repo, ignore=shutil.ignore_patterns("mlruns", ".snakemake", "logs"))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / ".gitignore").write_text("/logs/\n/mlruns/\n/.snakemake/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _sh(git + ["init", "-q", "-b", "main"], repo, env)
    _sh(DVC + ["init", "-q"], repo, env)
    _sh(DVC + ["remote", "add", "-d", "local", str(remote)], repo, env)
    _sh(DVC + ["commit", "-f", "pipeline"], repo, env)  # record the outputs already computed
    _sh(DVC + ["push"], repo, env)
    _sh(git + ["add", "-A"], repo, env)
    _sh(git + ["commit", "-qm", "smoke results"], repo, env)

    _sh(git + ["clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "results-smoke").exists()
    _sh(DVC + ["pull"], clone, env)
    for path in (Path("results-smoke/toy/alignment.csv"), Path("data/raw/cowley2023_v4/210325.zarr")):
        assert path_md5(clone / path) == path_md5(repo / path)
    out = _sh(DVC + ["repro"], clone, env)
    assert "didn't change" in out and "Running stage" not in out
    _sh(SNAKEMAKE + ["--touch", "--no-hooks", "--cores", "1", "--configfile", "config/smoke.yaml"],
        clone, env)
    out = _sh(SNAKEMAKE + ["-n", "--configfile", "config/smoke.yaml"], clone, env)
    assert "Nothing to be done" in out
