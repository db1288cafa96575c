"""DVC round trip as a user does it: run, commit the lock, push; a fresh clone pulls and
`sparsealign run` recomputes nothing, with no manual step."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SNAKEMAKE

DVC = [sys.executable, "-m", "dvc"]
DVC_YAML = """stages:
  pipeline:
    cmd: sparsealign run --config config/smoke.yaml --cores 1
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
def test_run_commit_push_then_fresh_clone_pulls_and_recomputes_nothing(smoke_run, tmp_path):
    from sparsealign.provenance import path_md5

    work, env, _ = smoke_run
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",  # `sparsealign` itself
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}  # not the smoke run's
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    shutil.copytree(work, repo, ignore=shutil.ignore_patterns("mlruns", ".snakemake", "logs"))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / ".gitignore").write_text("/logs/\n/mlruns/\n/.snakemake/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _sh(git + ["init", "-q", "-b", "main"], repo, env)
    _sh(DVC + ["init", "-q"], repo, env)
    _sh(DVC + ["remote", "add", "-d", "local", str(remote)], repo, env)
    out = _sh(DVC + ["repro"], repo, env)  # the main command: its outputs are there already
    assert "Nothing to be done" in out
    # What `sparsealign run` says to do to publish a result: commit the lock, then push.
    _sh(git + ["add", "-A"], repo, env)
    _sh(git + ["commit", "-qm", "smoke results"], repo, env)
    assert "dvc.lock" in _sh(["git", "ls-files"], repo, env)
    _sh(DVC + ["push"], repo, env)

    _sh(git + ["clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "results-smoke").exists()
    _sh(DVC + ["pull"], clone, env)
    for path in (Path("results-smoke/toy/alignment.csv"), Path("data/raw/cowley2023_v4/210325.zarr")):
        assert path_md5(clone / path) == path_md5(repo / path)
    out = _sh([sys.executable, "-m", "sparsealign", "run", "--config", "config/smoke.yaml",
               "--cores", "1"], clone, env)
    assert "Nothing to be done" in out and "localrule" not in out
    out = _sh(DVC + ["status"], clone, env)
    assert "up to date" in out
