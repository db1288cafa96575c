"""SIGKILL the whole pipeline (``sparsealign run``, Snakemake and its jobs, as a power cut
would) in the middle of writing a Zarr store, then in the middle of SAE training, then in
a late job; after each, rerun exactly the user's command; check the recovery.

The run: ``sparsealign run --config config/c.yaml --cores 4``, the toy experiment of the
smoke config (SAE trained for 40 epochs), on one SQLite MLflow store. Each kill waits for
an observable event (a file appearing), never for a time. A ``sitecustomize`` on the
jobs' PYTHONPATH makes the kills land where intended, without changing any number: it
slows Zarr writes into temporary stores (so a kill finds a half-written store), slows SAE
steps and checkpoints every few steps (so a kill finds a checkpoint and training still
running), and records the step each SAE training starts from.

    kill 1: a store half-written       (a `*.zarr.tmp-*` with its metadata)
    kill 2: SAE training mid-way       (an SAE checkpoint)
    kill 3: a late job                 (the first alignment table, `scores/*.csv`)
    run 4:  the same command, to the report
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import SNAKEMAKE, job_env, workdir
from test_crash_integrity import toy_only_config

pytestmark = [pytest.mark.crash, pytest.mark.e2e]

# Exactly what the user types, every time: no --unlock, no --rerun-incomplete.
COMMAND = [sys.executable, "-m", "sparsealign", "run", "--config", "config/c.yaml", "--cores", "4"]
RECOVERY_ERRORS = ("LockException", "IncompleteFilesException", "--unlock")

FAULT_HOOKS = textwrap.dedent('''
    """Fault-injection hooks for tests: patch modules right after they are imported."""
    import importlib.abc
    import importlib.util
    import json
    import os
    import sys
    import time

    def _after_import(name, patch):
        class Hook(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path=None, target=None):
                if fullname != name:
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(fullname)
                run = spec.loader.exec_module

                def exec_module(module):
                    run(module)
                    patch(module)
                spec.loader.exec_module = exec_module
                return spec
        sys.meta_path.insert(0, Hook())

    ZARR_DELAY = float(os.environ.get("FAULT_ZARR_DELAY") or 0)
    STEP_DELAY = float(os.environ.get("FAULT_STEP_DELAY") or 0)
    CHECKPOINT_EVERY = int(os.environ.get("FAULT_CHECKPOINT_EVERY") or 0)
    TRACE = os.environ.get("FAULT_TRACE")

    if ZARR_DELAY:
        def slow_zarr(module):
            original = module.LocalStore.set

            async def set(self, key, value):
                if ".tmp-" in str(self.root):
                    time.sleep(ZARR_DELAY)  # blocks the event loop: one key at a time
                return await original(self, key, value)
            module.LocalStore.set = set
        _after_import("zarr.storage._local", slow_zarr)

    def sae_training(module):
        if CHECKPOINT_EVERY:
            module.train_sae.__kwdefaults__["checkpoint_every"] = CHECKPOINT_EVERY
        original = module._train_step
        first = []

        def step(sae, opt, sched, state, *args, **kwargs):
            if not first:
                first.append(state.step)
                if TRACE:
                    with open(os.path.join(TRACE, f"{os.getpid()}.json"), "w") as handle:
                        json.dump({"first_step": state.step, "argv": sys.argv}, handle)
            if STEP_DELAY:
                time.sleep(STEP_DELAY)
            return original(sae, opt, sched, state, *args, **kwargs)
        module._train_step = step
    _after_import("sparsealign.sae.train", sae_training)
''')

LOCK_ERRORS = ("database is locked", "OperationalError", "alembic", "duplicate column")


def _start(work, env, log):
    handle = open(log, "w")
    proc = subprocess.Popen(COMMAND, cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)
    handle.close()
    return proc


def _kill_all(proc) -> None:
    """SIGKILL sparsealign, Snakemake and every job: they share the session it was started in."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def _wait_for(condition, proc, log, timeout=600, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except FileNotFoundError:  # a folder renamed into place while rglob walked it
            found = None
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"pipeline ended ({proc.returncode}) before {what}: "
                                 f"{Path(log).read_text()[-3000:]}")
        time.sleep(0.05)
    _kill_all(proc)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["step"])


@pytest.fixture(scope="module")
def recovery(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("crash")
    work = workdir(tmp)
    toy_only_config(work, "c", sae={"epochs": 40})
    hooks, trace = tmp / "hooks", tmp / "trace"
    hooks.mkdir()
    trace.mkdir()
    (hooks / "sitecustomize.py").write_text(FAULT_HOOKS)
    env = {**job_env(work), "PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "FAULT_CHECKPOINT_EVERY": "20", "FAULT_TRACE": str(trace)}
    results = work / "results-c"
    seen = {}

    # Kill 1: a Zarr store half-written (its temporary copy has metadata, not all chunks).
    proc = _start(work, {**env, "FAULT_ZARR_DELAY": "0.5"}, tmp / "run1.log")
    half = _wait_for(lambda: next((p for p in results.rglob("*.zarr.tmp-*") if (p / "zarr.json").exists()),
                                  None), proc, tmp / "run1.log", what="a store being written")
    _kill_all(proc)
    seen["half_written"] = half
    seen["final_of_half"] = half.with_name(half.name.split(".tmp-")[0])
    seen["final_existed_after_kill1"] = seen["final_of_half"].exists()
    seen["locked_after_kill1"] = any((work / ".snakemake" / "locks").glob("*"))
    plan = subprocess.run(SNAKEMAKE + ["-n", "--configfile", "config/c.yaml"], cwd=work, env=env,
                          capture_output=True, text=True)
    seen["plan_after_kill1"] = plan.stdout + plan.stderr

    # Kill 2: SAE training after a checkpoint, before the end.
    proc = _start(work, {**env, "FAULT_STEP_DELAY": "0.05"}, tmp / "run2.log")
    checkpoints = _wait_for(lambda: sorted(results.rglob("*.sae.pt.ckpt")) or None, proc,
                            tmp / "run2.log", what="an SAE checkpoint")
    seen["stale_after_run2_start"] = half.exists()
    _kill_all(proc)
    seen["checkpoint_steps"] = {str(p): _checkpoint_step(p) for p in sorted(results.rglob("*.sae.pt.ckpt"))}
    seen["sae_outputs_after_kill2"] = sorted(str(p) for p in results.rglob("*.sae.pt"))
    seen["first_checkpoints"] = checkpoints
    for old in trace.iterdir():
        old.unlink()

    # Kill 3: a late job, once the first alignment table is written.
    proc = _start(work, env, tmp / "run3.log")
    _wait_for(lambda: next(results.rglob("scores/*.csv"), None), proc, tmp / "run3.log",
              what="an alignment table")
    _kill_all(proc)
    seen["report_after_kill3"] = (results / "report.html").exists()

    # Run 4: to the end.
    proc = _start(work, env, tmp / "run4.log")
    seen["returncode"] = proc.wait(timeout=1200)
    seen["run4_log"] = (tmp / "run4.log").read_text()
    seen["rerun_logs"] = [(tmp / f"run{i}.log").read_text() for i in (2, 3, 4)]
    seen["trace"] = [json.loads(p.read_text()) for p in trace.iterdir()]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-c")
    seen["runs"] = client.search_runs([experiment.experiment_id], max_results=1000,
                                      order_by=["attributes.start_time ASC"])
    seen["logs"] = "\n".join(p.read_text(errors="replace") for p in
                             [*(tmp / f"run{i}.log" for i in (1, 2, 3, 4)),
                              *(work / "logs").rglob("*.log"), *(work / ".snakemake" / "log").glob("*")])
    return work, seen


def test_rerun_completes_and_every_store_is_valid(recovery):
    from sparsealign import schema

    work, seen = recovery
    assert seen["returncode"] == 0, seen["run4_log"][-4000:]
    assert "report: " in seen["run4_log"]
    results = work / "results-c"
    assert (results / "report.html").exists()
    stores = sorted(results.rglob("*.zarr"))
    assert len(stores) == 7  # features, 2 activations, 4 latents: nothing half-written
    for store in stores:
        schema.open_store(store)
    leftovers = [p for p in results.rglob("*") if ".tmp" in p.name or ".old-" in p.name
                 or p.name.endswith(".ckpt")]
    assert leftovers == []


def test_the_same_command_recovers_with_no_manual_step(recovery):
    _, seen = recovery
    assert seen["locked_after_kill1"]  # a kill leaves Snakemake's lock behind
    assert not seen["report_after_kill3"]
    # Runs 2 and 3 reached their kill point (else the fixture fails), run 4 the end: each
    # cleared the lock the killed run left, none stopped on a lock or an incomplete output.
    for log in seen["rerun_logs"]:
        assert "cleared the lock of a run that was killed" in log
        for marker in RECOVERY_ERRORS:
            assert marker not in log, marker


def test_a_half_written_store_is_never_taken_as_complete(recovery):
    _, seen = recovery
    assert not seen["final_existed_after_kill1"]  # only the temporary copy existed
    folders = seen["final_of_half"].parts
    rule = next(rule for folder, rule in (("stimuli", "toy_features"), ("systems", "toy_model"),
                                         ("latents", "train_sae")) if folder in folders)
    assert f"rule {rule}:" in seen["plan_after_kill1"]  # Snakemake recomputes it
    # The next run's onstart removed the dead writer's temporary copy.
    assert not seen["stale_after_run2_start"]


def test_killed_sae_training_resumes_from_its_last_checkpoint(recovery):
    work, seen = recovery
    assert seen["sae_outputs_after_kill2"] == []
    steps = seen["checkpoint_steps"]
    assert steps and all(step > 0 for step in steps.values())
    resumed = {}
    for record in seen["trace"]:
        sae_out = record["argv"][record["argv"].index("--sae-out") + 1]
        resumed[str((work / sae_out).resolve())] = record["first_step"]
    for checkpoint, step in steps.items():
        sae_out = str(Path(checkpoint.removesuffix(".ckpt")).resolve())
        assert resumed[sae_out] == step, (checkpoint, step, resumed)


def test_mlflow_marks_the_killed_runs_failed(recovery):
    _, seen = recovery
    parents = [r for r in seen["runs"] if r.data.tags.get("sparsealign.role") == "pipeline"]
    assert [p.info.status for p in parents] == ["FAILED", "FAILED", "FAILED", "FINISHED"]
    for killed in parents[:-1]:
        assert "pipeline process gone" in killed.data.tags["sparsealign.reaped"]
    jobs_of = {p.info.run_id: [r for r in seen["runs"]
                               if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
               for p in parents}
    killed_jobs = [j for p in parents[:-1] for j in jobs_of[p.info.run_id] if j.info.status != "FINISHED"]
    assert killed_jobs and all(j.info.status == "FAILED" for j in killed_jobs)
    assert all("sparsealign.reaped" in j.data.tags for j in killed_jobs)
    assert "train_sae" in {j.data.tags["snakemake.rule"] for j in killed_jobs}
    last = jobs_of[parents[-1].info.run_id]
    assert last and all(j.info.status == "FINISHED" for j in last)
    assert not [r for r in seen["runs"] if r.info.status == "RUNNING"]


def test_parallel_jobs_on_sqlite_never_fail_on_locks(recovery):
    _, seen = recovery
    for marker in LOCK_ERRORS:
        assert marker not in seen["logs"], marker
