"""A shared MLflow server: a real ``mlflow server`` (SQLite backend, one worker) on
127.0.0.1, started and stopped by PID here; the pipeline logs to it over HTTP. An
unreachable server is one clear error before any job starts."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import SNAKEMAKE, job_env, workdir
from test_crash_integrity import toy_only_config

pytestmark = pytest.mark.services


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started with start_new_session=True: its process group is its PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = base / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           f"sqlite:///{base}/mlflow.db", "--artifacts-destination", str(base / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", proc, log)
        yield url, base
    finally:
        stop(proc)


def test_pipeline_logs_to_the_server_over_http(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    url, base = mlflow_server
    work = workdir(tmp_path)
    config = toy_only_config(work)
    env = {**job_env(work), "MLFLOW_TRACKING_URI": url}
    target = "results-t/systems/toy/m8_seed0.zarr"
    proc = subprocess.run(SNAKEMAKE + [target, "--cores", "2", "--configfile", config], cwd=work,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "mlruns").exists()  # nothing went to a local store

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("sparsealign-t")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline"]
    jobs = [r for r in runs if r.data.tags.get("sparsealign.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(j.data.tags["snakemake.rule"] for j in jobs) == ["toy_features", "toy_model"]
    assert all(j.info.status == "FINISHED" for j in jobs)
    assert all(j.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for j in jobs)
    model = next(j for j in jobs if j.data.tags["snakemake.rule"] == "toy_model")
    assert len(client.get_metric_history(model.info.run_id, "toy_loss")) > 1
    assert any(k.startswith("output_md5.") for k in model.data.tags)
    assert (base / "mlflow.db").stat().st_size > 0


def test_artifacts_go_through_the_server(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from sparsealign import tracking

    url, base = mlflow_server
    monkeypatch.setenv("SPARSEALIGN_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.delenv("SPARSEALIGN_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    table = tmp_path / "summary.csv"
    table.write_text("metric,mean\nridge,0.5\n")
    with tracking.job_run("summarise", {"exp": "toy"}) as job:
        job.artifact(table)
    assert [a.path for a in MlflowClient(tracking_uri=url).list_artifacts(job.run_id)] == ["summary.csv"]
    stored = list((base / "artifacts").rglob("summary.csv"))
    assert len(stored) == 1 and stored[0].read_text() == table.read_text()


def test_unreachable_server_is_one_error_before_any_job(tmp_path):
    work = workdir(tmp_path)
    config = toy_only_config(work)
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    env = {**job_env(work), "MLFLOW_TRACKING_URI": url}
    start = time.monotonic()
    proc = subprocess.run(SNAKEMAKE + ["--cores", "2", "--configfile", config], cwd=work, env=env,
                          capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {url}: MLflow tracking server unreachable (")
    assert "Traceback" not in proc.stderr
    assert not (work / "results-t").exists() and not (work / "logs").exists()
    assert elapsed < 120
