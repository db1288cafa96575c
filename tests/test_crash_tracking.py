"""MLflow under faults: parallel writers on one SQLite file, runs left RUNNING by killed
processes, a store that cannot be used. Real MLflow on temporary SQLite files."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.crash


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store for this test, tracking on, cwd in tmp_path."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPARSEALIGN_TRACKING", "on")
    monkeypatch.delenv("SPARSEALIGN_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return uri


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _runs(uri, experiment="sparsealign"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=1000)}


def test_parallel_jobs_on_a_fresh_sqlite_store_never_hit_locks(store, tmp_path):
    """Eight jobs start at once on a store nobody created yet (no onstart): without the
    schema lock MLflow's concurrent migrations fail with 'duplicate column' errors."""
    job = textwrap.dedent("""
        import sys
        from sparsealign import tracking
        with tracking.job_run("stress", {"i": sys.argv[1]}, {"p": 1}) as run:
            run.curves({"loss": [(s, 1.0 / (s + 1)) for s in range(300)]})
            run.tags({f"t{k}": k for k in range(150)})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", job, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0, err[-2000:]
        assert "database is locked" not in err and "alembic" not in err.lower()
    runs = _runs(store)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs.values())
    assert all(len(r.data.tags) >= 150 for r in runs.values())


def test_reaper_fails_runs_of_dead_processes_and_spares_live_ones(store):
    from mlflow.tracking import MlflowClient

    from sparsealign import tracking
    from sparsealign.tracking.client import open_client

    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment("sparsealign")
    dead = tracking.process_tags(_dead_pid())
    dead["sparsealign.pid_started"] = "1.00"
    killed = client.create_run(exp, tags={"sparsealign.role": "pipeline", **dead}).info.run_id
    orphan = client.create_run(exp, tags={"sparsealign.role": "job", "mlflow.parentRunId": killed,
                                          **tracking.process_tags()}).info.run_id
    live = client.create_run(exp, tags={"sparsealign.role": "pipeline",
                                        **tracking.process_tags()}).info.run_id
    live_job = client.create_run(exp, tags={"sparsealign.role": "job", "mlflow.parentRunId": live,
                                            **tracking.process_tags()}).info.run_id
    dead_job = client.create_run(exp, tags={"sparsealign.role": "job", "mlflow.parentRunId": live,
                                            **dead}).info.run_id
    remote = client.create_run(exp, tags={"sparsealign.role": "pipeline",
                                          "sparsealign.host": "another-host",
                                          "sparsealign.pid": "1"}).info.run_id

    reaped = tracking.reap_orphans(open_client(), exp)

    assert set(reaped) == {killed, orphan, dead_job}
    runs = _runs(store)
    for run_id in (killed, orphan, dead_job):
        assert runs[run_id].info.status == "FAILED"
        assert "marked FAILED" in runs[run_id].data.tags["sparsealign.reaped"]
    for run_id in (live, live_job, remote):
        assert runs[run_id].info.status == "RUNNING"


def test_start_parent_reaps_then_end_parent_fails_unreported_jobs(store):
    from mlflow.tracking import MlflowClient

    from sparsealign import tracking

    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment("sparsealign")
    killed = client.create_run(exp, tags={"sparsealign.role": "pipeline",
                                          **tracking.process_tags(_dead_pid())}).info.run_id
    parent = tracking.start_parent({"a": 1}, "sha", "sparsealign")
    assert _runs(store)[killed].info.status == "FAILED"
    # A job killed by a signal never reports; the pipeline's end does it for it.
    silent = client.create_run(exp, tags={"sparsealign.role": "job", "mlflow.parentRunId": parent,
                                          **tracking.process_tags()}).info.run_id
    with tracking.job_run("ok", {}) as job:
        assert job.run_id
    tracking.end_parent("FAILED")
    runs = _runs(store)
    assert runs[parent].info.status == "FAILED"
    assert runs[silent].info.status == "FAILED"
    assert runs[job.run_id].info.status == "FINISHED"
    assert runs[parent].data.tags["sparsealign.pid"] == str(os.getpid())


def test_preflight_names_a_sqlite_file_that_is_not_a_database(store, tmp_path):
    from sparsealign import tracking
    from sparsealign.errors import SparsealignError

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    db.write_text("this is not sqlite\n" * 10)
    with pytest.raises(SparsealignError, match=r"mlflow\.db: not a SQLite database"):
        tracking.preflight()


def test_preflight_names_an_unreachable_server_quickly(monkeypatch):
    import socket
    import time

    from sparsealign import tracking
    from sparsealign.errors import SparsealignError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SPARSEALIGN_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(SparsealignError, match=rf"http://127.0.0.1:{port}: MLflow tracking server "
                                               r"unreachable .*refused"):
        tracking.preflight()
    assert time.monotonic() - start < 15
