"""MLflow glue: one parent run per pipeline invocation, one child run per job.

The parent run is created in Snakemake's ``onstart`` (so the SQLite schema is created
once, before jobs fan out) and its id reaches jobs through ``SPARSEALIGN_PARENT_RUN_ID``
(set in the Snakemake process, inherited by every job it spawns) or, for executors that
do not inherit the environment, the file :data:`PARENT_RUN_FILE`. A job run by hand
with no parent gets a standalone run. ``SPARSEALIGN_TRACKING=off`` disables logging.

Everything goes through :class:`mlflow.tracking.MlflowClient` with batched calls; large
outputs are logged by path and hash, never copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "sparsealign"
PARENT_ENV = "SPARSEALIGN_PARENT_RUN_ID"
PARENT_RUN_FILE = Path(".snakemake/sparsealign_parent_run")
_BATCH = 100  # MLflow accepts at most 100 params or tags per log_batch call


def enabled() -> bool:
    return os.environ.get("SPARSEALIGN_TRACKING", "on").lower() not in ("off", "0", "false")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def _client():
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri().startswith("sqlite:///"):
        # Keep artifacts beside the database rather than in the working directory.
        db = Path(tracking_uri().removeprefix("sqlite:///")).resolve()
        artifacts = (db.parent / "artifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def git_state() -> dict:
    """``git_commit`` and ``git_dirty`` of the working tree (``unknown`` outside git)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout
    try:
        return {"git_commit": git("rev-parse", "HEAD").strip(),
                "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no").strip()))}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def path_md5(path) -> str:
    """md5 of a file, or of a directory's sorted (relative path, file md5) listing."""
    path = Path(path)
    if path.is_file():
        return _file_md5(path)
    digest = hashlib.md5()
    # Snakemake drops an empty `.snakemake_timestamp` into directory outputs after the job.
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp"):
        digest.update(f"{file.relative_to(path).as_posix()}:{_file_md5(file)}\n".encode())
    return digest.hexdigest()


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config → ``{"a.b.c": "value"}`` strings, as MLflow params want."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def start_parent(config: dict, config_sha: str, experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """Create the pipeline's parent run; export its id to the jobs. Returns the run id."""
    if not enabled():
        return None
    client = _client()
    tags = {**git_state(), "config_sha": config_sha, "host": socket.gethostname(),
            "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "sparsealign.role": "pipeline"}
    run = client.create_run(_experiment_id(client, experiment), tags=tags)
    _log_params(client, run.info.run_id, flatten(config))
    os.environ[PARENT_ENV] = run.info.run_id
    PARENT_RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PARENT_RUN_FILE.write_text(run.info.run_id)
    return run.info.run_id


def end_parent(status: str = "FINISHED") -> None:
    """Close the parent run opened by :func:`start_parent` (``FINISHED`` or ``FAILED``)."""
    run_id = os.environ.get(PARENT_ENV)
    if not enabled() or not run_id:
        return
    _client().set_terminated(run_id, status=status)


def parent_run_id() -> str | None:
    run_id = os.environ.get(PARENT_ENV)
    if run_id:
        return run_id
    return PARENT_RUN_FILE.read_text().strip() if PARENT_RUN_FILE.exists() else None


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[start:start + _BATCH])


class JobRun:
    """What a job logs into its child run; every method batches its calls."""

    def __init__(self, client, run_id: str | None):
        self.client, self.run_id = client, run_id

    def params(self, params: dict) -> None:
        if self.run_id:
            _log_params(self.client, self.run_id, flatten(params))

    def tags(self, tags: dict) -> None:
        if self.run_id:
            from mlflow.entities import RunTag

            items = [RunTag(k[:250], str(v)[:5000]) for k, v in tags.items()]
            for start in range(0, len(items), _BATCH):
                self.client.log_batch(self.run_id, tags=items[start:start + _BATCH])

    def metrics(self, metrics: dict, step: int = 0) -> None:
        self.curves({name: [(step, value)] for name, value in metrics.items()})

    def curves(self, curves: dict) -> None:
        """``{"name": [(step, value), …]}`` → one or a few log_batch calls."""
        if not self.run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(name, float(value), now, int(step))
                 for name, points in curves.items() for step, value in points
                 if value == value]  # NaN is skipped, never logged as a number
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def artifact(self, path) -> None:
        if self.run_id:
            self.client.log_artifact(self.run_id, str(path))

    def outputs(self, paths) -> None:
        """Log large outputs by path and hash, never by copy."""
        self.tags({f"output_md5.{p}": path_md5(p) for p in paths if Path(p).exists()})


@contextlib.contextmanager
def job_run(rule: str, wildcards: dict | None = None, params: dict | None = None,
            inputs=(), config_sha: str = ""):
    """Child run for one job: tagged with rule, wildcards, git state and input hashes.

    The run ends ``FINISHED`` when the block exits normally and ``FAILED`` when it
    raises (the exception propagates unchanged).
    """
    if not enabled():
        yield JobRun(None, None)
        return
    client = _client()
    parent = parent_run_id()
    experiment_id = (client.get_run(parent).info.experiment_id if parent
                     else _experiment_id(client, DEFAULT_EXPERIMENT))
    wildcards = wildcards or {}
    label = " ".join(f"{k}={v}" for k, v in wildcards.items())
    tags = {**git_state(), "config_sha": config_sha, "snakemake.rule": rule,
            "mlflow.runName": f"{rule} {label}".strip(), "sparsealign.role": "job",
            **{f"wildcard.{k}": v for k, v in wildcards.items()},
            **{f"input_md5.{p}": path_md5(p) for p in inputs if Path(p).exists()}}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, tags=tags)
    job = JobRun(client, run.info.run_id)
    job.params(params or {})
    try:
        yield job
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
