import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Unit tests never talk to MLflow unless they ask for it (the e2e test sets its own URI).
os.environ.setdefault("SPARSEALIGN_TRACKING", "off")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``, the default in pyproject.toml): every test of
    the shared smoke run goes to one worker, so the smoke pipeline runs once per session;
    every other test stays with its module, so module fixtures (a server, a crash run) are
    built once."""
    from _pytest.nodeid import NodeId

    for item in items:
        in_smoke_group = "smoke_run" in item.fixturenames or item.get_closest_marker("slurm")
        group = "smoke_run" if in_smoke_group else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
        # pytest-xdist 3.8 tells its scheduler the group by renaming the test `<id>@<group>`
        # through `item._nodeid`, which pytest 9 no longer reads (the id is `item._id`):
        # without this every worker that runs a smoke test runs the smoke pipeline.
        if getattr(config.option, "loadgroup", False) and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{group}")
    # The live SLURM session (tests/cluster/test_slurm.py) runs in a thread beside the other
    # tests of its worker: its first test starts it, the tests that read it come last.
    items.sort(key=lambda item: 1 if not item.get_closest_marker("slurm")
               else 0 if item.name == "test_live_cluster_is_up" else 2)


def pytest_terminal_summary(terminalreporter):
    """The live SLURM test's timings and sacct job states (``record_property("live SLURM",
    …)``; user properties reach the controller from xdist workers too)."""
    lines = {value for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, "user_properties", ()) if name == "live SLURM"}
    if lines:
        terminalreporter.section("live SLURM")
        for line in sorted(lines, reverse=True):
            terminalreporter.line(line)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests run on 2 shared cores: one torch and one BLAS thread keep them fast and deterministic."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def make_store():
    from sparsealign import schema

    def build(values, kind="neurons", stimulus_prefix="s", **attrs):
        values = np.asarray(values)
        ids = [f"{stimulus_prefix}{i:05d}" for i in range(values.shape[0])]
        units = [f"u/{i:05d}" for i in range(values.shape[1])]
        return schema.make_store(values, ids, units, source="test", layer="x", kind=kind,
                                 config={}, attrs=attrs)

    return build


ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    return work


def job_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(SPARSEALIGN_TRACKING="on", MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlruns/mlflow.db",
               PYTHONWARNINGS="ignore",
               SPARSEALIGN_DATA_MIRROR=os.environ.get("SPARSEALIGN_DATA_MIRROR",
                                                      str(ROOT.parent / "shared" / "data")))
    return env


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("e2e"))
    env = job_env(work)
    # Through the user's entry point: `sparsealign run` passes extra arguments to Snakemake.
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "run", "--config", "config/smoke.yaml",
                           "--cores", "2"], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, env, proc


class Killed(Exception):
    """Raised by :func:`kill_at`: a training run stopped as a kill would stop it."""


def kill_at(step: int):
    """A ``log_fn`` for ``train_sae`` that raises :class:`Killed` at ``step``."""
    def log_fn(current, row):
        if current == step:
            raise Killed
    return log_fn
