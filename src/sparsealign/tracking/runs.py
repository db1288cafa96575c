"""MLflow runs: one parent run per pipeline invocation, one child run per job.

The parent's id reaches jobs through :data:`PARENT_ENV` or, for jobs on a shared
filesystem that do not inherit the environment, :data:`PARENT_RUN_FILE`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from sparsealign.atomic import write_text
from sparsealign.provenance import flatten, git_state, path_md5
from sparsealign.tracking.client import DEFAULT_EXPERIMENT, enabled, ensure_experiment, open_client
from sparsealign.tracking.preflight import preflight
from sparsealign.tracking.reaper import mark_failed, process_tags, reap_orphans

PARENT_ENV = "SPARSEALIGN_PARENT_RUN_ID"
PARENT_RUN_FILE = Path(".snakemake/sparsealign_parent_run")
_BATCH = 100  # MLflow accepts at most 100 params or tags per log_batch call


# --------------------------------------------------------------------------- pipeline run
def start_parent(config: dict, config_sha: str, experiment: str = DEFAULT_EXPERIMENT,
                 extra_tags: dict | None = None) -> str | None:
    """Open (or adopt, see :mod:`sparsealign.launcher`) the pipeline's parent run.

    Runs :func:`preflight` first and :func:`reap_orphans` on the experiment; exports the
    run id to the jobs (environment and :data:`PARENT_RUN_FILE`). Returns the run id.
    """
    if not enabled():
        return None
    preflight()
    client = open_client()
    experiment_id = ensure_experiment(client, experiment)
    run_id = _adoptable_parent(client, experiment_id)
    reap_orphans(client, experiment_id, f"by the pipeline started at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    tags = {**git_state(), "config_sha": config_sha, "host": socket.gethostname(),
            "sparsealign.role": "pipeline", **(extra_tags or {})}
    if run_id is None:
        tags.update(process_tags())
        tags["mlflow.runName"] = f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}"
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
    else:
        JobRun(client, run_id).tags(tags)
    _log_params(client, run_id, flatten(config))
    os.environ[PARENT_ENV] = run_id
    write_text(PARENT_RUN_FILE, run_id)
    return run_id


def _adoptable_parent(client, experiment_id: str) -> str | None:
    """The parent the launcher made before Snakemake started, if that is what the env names."""
    run_id = os.environ.get(PARENT_ENV)
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:
        return None
    if (run.info.status == "RUNNING" and run.info.experiment_id == experiment_id
            and run.data.tags.get("sparsealign.launcher") == "1"):
        return run_id
    return None


def open_launcher_parent(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """The parent run :mod:`sparsealign.launcher` opens before Snakemake starts.

    Same pre-flight and reaping as :func:`start_parent`; ``onstart`` adopts the run and
    adds the config. The launcher's process owns it (its pid is what the reaper checks).
    """
    preflight()
    client = open_client()
    experiment_id = ensure_experiment(client, experiment)
    reap_orphans(client, experiment_id, f"by the launcher at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    tags = {**git_state(), "host": socket.gethostname(), "sparsealign.role": "pipeline",
            "sparsealign.launcher": "1", **process_tags(),
            "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}"}
    return client.create_run(experiment_id, tags=tags).info.run_id


def close_if_running(run_id: str, status: str) -> None:
    """End ``run_id`` with ``status`` unless Snakemake's hooks already ended it."""
    client = open_client()
    if client.get_run(run_id).info.status == "RUNNING":
        close_parent(client, run_id, status)


def end_parent(status: str = "FINISHED") -> None:
    """Close the parent run (``FINISHED`` or ``FAILED``), failing jobs that never reported."""
    run_id = os.environ.get(PARENT_ENV)
    if not enabled() or not run_id:
        return
    close_parent(open_client(), run_id, status)


def close_parent(client, run_id: str, status: str) -> None:
    """Mark the ``RUNNING`` children of ``run_id`` ``FAILED``, then end ``run_id``."""
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        max_results=5000)
    for child in children:
        mark_failed(client, child.info.run_id, "the pipeline ended while this job was RUNNING "
                                               "(its process was killed)")
    client.set_terminated(run_id, status=status)


def parent_run_id() -> str | None:
    """The parent run named by the environment or :data:`PARENT_RUN_FILE`, if any."""
    return os.environ.get(PARENT_ENV) or parent_run_in_file()


def parent_run_in_file() -> str | None:
    """The parent run in :data:`PARENT_RUN_FILE`, if any: the last one Snakemake's ``onstart``
    opened, which it does only in an invocation that has jobs to run."""
    return PARENT_RUN_FILE.read_text().strip() if PARENT_RUN_FILE.exists() else None


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[start:start + _BATCH])


# --------------------------------------------------------------------------- job runs
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
    raises (the exception propagates unchanged). A job killed outright leaves it
    ``RUNNING`` until :func:`end_parent` or the next pipeline's :func:`reap_orphans`.
    """
    if not enabled():
        yield JobRun(None, None)
        return
    client = open_client()
    parent, experiment_id = _job_parent(client)
    wildcards = wildcards or {}
    label = " ".join(f"{k}={v}" for k, v in wildcards.items())
    tags = {**git_state(), "config_sha": config_sha, "snakemake.rule": rule,
            "mlflow.runName": f"{rule} {label}".strip(), "sparsealign.role": "job",
            **process_tags(),
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


def _job_parent(client) -> tuple[str | None, str]:
    """(parent run id or None, experiment id) for a job.

    The environment's parent is trusted (Snakemake set it); the file's only while that
    run is still RUNNING, so a job run by hand after a crash does not join a dead pipeline.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent:
        return parent, client.get_run(parent).info.experiment_id
    if PARENT_RUN_FILE.exists():
        parent = PARENT_RUN_FILE.read_text().strip()
        try:
            run = client.get_run(parent)
        except Exception:
            run = None
        if run is not None and run.info.status == "RUNNING":
            return parent, run.info.experiment_id
    return None, ensure_experiment(client, DEFAULT_EXPERIMENT)

