"""launcher.run_snakemake (behind `sparsealign run`) on a tiny Snakefile: a lock left by a
killed run is cleared and its incomplete output recomputed by the same command (also when
`dvc repro` runs it); a live run, through sparsealign or a Snakemake started by hand, is
refused in one line naming its pid, exit status 2."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SNAKEMAKE
from test_crash_integrity import DVC, _dvc_repo, _sh

pytestmark = pytest.mark.crash

# The job writes half its output, says it started, then waits for a file named `go`.
SNAKEFILE = """
rule all:
    input: "out.txt"

rule work:
    output: "out.txt"
    shell: "echo half > {output}; touch started; while [ ! -e go ]; do sleep 0.1; done; echo done >> {output}"
"""
COMMAND = SNAKEMAKE + ["--cores", "1"]
GUARDED = [sys.executable, "-c", "import sys; from sparsealign.launcher import run_snakemake; "
           "sys.exit(run_snakemake(sys.argv[1:]))"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return tmp_path


def _start_until_job_runs(work, command):
    proc = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (work / "started").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the job never started: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.05)
    return proc


def test_a_killed_run_is_recovered_by_the_same_command(work, capsys):
    from sparsealign.launcher import SNAKEMAKE_LOCKS, run_snakemake

    proc = _start_until_job_runs(work, GUARDED + COMMAND)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((work / SNAKEMAKE_LOCKS).iterdir())  # what made the rerun fail with LockException
    assert (work / "out.txt").read_text() == "half\n"  # and IncompleteFilesException

    (work / "go").touch()
    assert run_snakemake(COMMAND) == 0
    assert (work / "out.txt").read_text() == "half\ndone\n"  # recomputed, not taken as it was
    assert "cleared the lock of a run that was killed" in capsys.readouterr().err
    assert run_snakemake(COMMAND) == 0  # and nothing is left to recover


@pytest.mark.parametrize("holder", ["sparsealign", "snakemake"])
def test_a_live_run_is_refused_with_its_pid(work, capsys, holder):
    from sparsealign.launcher import run_snakemake

    proc = _start_until_job_runs(work, (GUARDED if holder == "sparsealign" else []) + COMMAND)
    try:
        assert run_snakemake(COMMAND) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert f"pid {proc.pid}" in err and "unlock" not in err
        assert run_snakemake(COMMAND + ["--list-rules"]) == 0  # what runs no job is never refused
    finally:
        (work / "go").touch()
        assert proc.wait(timeout=300) == 0  # the live run was left alone
    assert (work / "out.txt").read_text() == "half\ndone\n"


def test_a_killed_dvc_repro_is_recovered_by_dvc_repro(work):
    _dvc_repo(work)
    (work / "dvc.yaml").write_text(f"""stages:
  pipeline:
    cmd: {shlex.join(GUARDED + COMMAND)}
    deps: [Snakefile]
    outs:
      - out.txt:
          persist: true
""")
    proc = _start_until_job_runs(work, DVC + ["repro"])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    (work / "go").touch()
    _sh(DVC + ["repro"], work)
    assert (work / "out.txt").read_text() == "half\ndone\n"
