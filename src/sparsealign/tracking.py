"""MLflow glue: one parent run per pipeline invocation, one child run per job.

The parent run is created in Snakemake's ``onstart`` (so the SQLite schema is created
once, before jobs fan out) and its id reaches jobs through ``SPARSEALIGN_PARENT_RUN_ID``
(set in the Snakemake process, inherited by every job it spawns, and exported by SLURM's
``sbatch --export=ALL``) or, for jobs on a shared filesystem that do not inherit the
environment, the file :data:`PARENT_RUN_FILE`. Executors that fix the jobs' environment
before ``onstart`` (Kubernetes) start through :mod:`sparsealign.launcher`, which creates
the parent first; ``onstart`` then adopts it. A job run by hand with no parent gets a
standalone run. ``SPARSEALIGN_TRACKING=off`` disables logging.

Faults are handled where they start:

- :func:`preflight` checks the store before any job starts (an unreachable server or an
  unusable SQLite file is one :class:`~sparsealign.errors.SparsealignError`, not a job
  failing half-way through the pipeline);
- SQLite: the schema is created or migrated under a file lock, and calls that meet a
  locked database are retried with backoff, so parallel jobs never fail on locking;
- :func:`reap_orphans` marks ``FAILED`` the runs a killed pipeline left ``RUNNING``
  (each run is tagged with the host, pid and start time of the process that owns it);
  :func:`end_parent` does the same for jobs of its own pipeline that died unreported.

Everything goes through :class:`mlflow.tracking.MlflowClient` with batched calls; large
outputs are logged by path and hash (:mod:`sparsealign.provenance`), never copied.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from sparsealign.errors import fail
from sparsealign.provenance import flatten, git_state, path_md5

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "sparsealign"
PARENT_ENV = "SPARSEALIGN_PARENT_RUN_ID"
PARENT_RUN_FILE = Path(".snakemake/sparsealign_parent_run")
PREFLIGHT_TIMEOUT_S = 10
_BATCH = 100  # MLflow accepts at most 100 params or tags per log_batch call
# SQLite errors that mean "try again", never "this is wrong".
_TRANSIENT = ("database is locked", "database table is locked", "database schema has changed")
_RETRIES = 10


def enabled() -> bool:
    return os.environ.get("SPARSEALIGN_TRACKING", "on").lower() not in ("off", "0", "false")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


# --------------------------------------------------------------------------- the client
@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock on ``path`` (created if missing), released on exit."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


class _Retrying:
    """An MlflowClient whose calls are retried (with jittered backoff) on a busy SQLite file.

    SQLite serialises writers; MLflow waits 20 s on a lock, but a writer that upgrades a
    read transaction gets ``database is locked`` at once. Failed calls roll back, so a
    retry never writes twice.
    """

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            for attempt in range(_RETRIES):
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:
                    if attempt == _RETRIES - 1 or not _transient(exc):
                        raise
                    time.sleep(min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
        return call


def _client():
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    db = _sqlite_path(uri)
    if db is None:
        return _Retrying(MlflowClient(tracking_uri=uri))
    # Creating or migrating the schema from several processes at once corrupts the
    # alembic state ("duplicate column", "table _alembic_tmp_… already exists"): build
    # the client (whose store does both on creation) under a lock beside the database.
    with _file_lock(db.with_name(db.name + ".lock")):
        return _Retrying(MlflowClient(tracking_uri=uri))


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    db = _sqlite_path(tracking_uri())
    if db is not None:
        # Keep artifacts beside the database rather than in the working directory.
        artifacts = (db.resolve().parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another process created it first
        if experiment is None:
            raise
        return experiment.experiment_id


# --------------------------------------------------------------------------- pre-flight
def preflight(timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail fast, with one line naming the store, if MLflow cannot be used.

    HTTP(S): the server must answer ``/health`` and one API call within ``timeout``
    seconds (no retries). SQLite: the folder must be writable and an existing file must
    be a SQLite database whose schema MLflow can use. Other stores are left to MLflow.
    """
    if not enabled():
        return
    uri = tracking_uri()
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)


def _check_server(uri: str, timeout: float) -> None:
    expected = ("a running MLflow server at that address (`mlflow server …`), "
                "or unset MLFLOW_TRACKING_URI to log to " + DEFAULT_TRACKING_URI)
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise fail(uri, f"MLflow tracking server is not healthy (HTTP {exc.code} on "
                       "/health)", expected) from None
        # 401/403/404: something answers; the API call below says whether it is MLflow.
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(uri, f"MLflow tracking server unreachable ({reason})", expected) from None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                      MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(max(1, timeout))))
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise fail(uri, f"MLflow tracking server refused the API call ({first})", expected) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_sqlite(uri: str) -> None:
    from mlflow.exceptions import MlflowException

    db = _sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(db.parent, f"cannot create the MLflow folder ({exc.strerror})",
                   "a writable folder for " + uri) from None
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise fail(db, "not writable", "a writable SQLite file for MLflow")
    if db.exists() and db.stat().st_size:
        with open(db, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise fail(db, "not a SQLite database", "an MLflow SQLite store (or no file)")
    try:
        _client()
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise fail(db, f"MLflow cannot use this store ({first})",
                   f"a current schema (`mlflow db upgrade {uri}`)") from None


# --------------------------------------------------------------------------- liveness
def _started(pid: int) -> str:
    """The start time of process ``pid`` (distinguishes a reused pid), or ``""``."""
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:  # no psutil, no such process, or no permission
        return ""


def process_tags(pid: int | None = None) -> dict:
    """Tags naming the process that owns a run, for :func:`reap_orphans`."""
    pid = pid or os.getpid()
    return {"sparsealign.host": socket.gethostname(), "sparsealign.pid": str(pid),
            "sparsealign.pid_started": _started(pid)}


def owner_alive(tags: dict) -> bool | None:
    """Whether the process that owns a run is alive; ``None`` if it ran on another host."""
    if tags.get("sparsealign.host") != socket.gethostname():
        return None
    try:
        pid = int(tags.get("sparsealign.pid", ""))
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    started = tags.get("sparsealign.pid_started", "")
    return not started or _started(pid) in ("", started)


def reap_orphans(client, experiment_id: str, reason_by: str = "") -> list[str]:
    """Mark ``FAILED`` the ``RUNNING`` runs whose process is gone; return their ids.

    A pipeline run is an orphan when its process (on this host) is dead; a job run when
    its own process (on this host) is dead, or its pipeline is an orphan or has ended.
    Runs owned by live processes, or by processes on other hosts whose pipeline is still
    running, are left alone.
    """
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=5000)
    by_id = {r.info.run_id: r for r in running}
    dead = {rid for rid, r in by_id.items()
            if r.data.tags.get("sparsealign.role") == "pipeline" and owner_alive(r.data.tags) is False}
    ended_parents: dict[str, bool] = {}

    def parent_ended(parent: str) -> bool:
        if parent in dead:
            return True
        if parent in by_id:
            return False
        if parent not in ended_parents:
            try:
                ended_parents[parent] = client.get_run(parent).info.status != "RUNNING"
            except Exception:  # deleted or unknown parent
                ended_parents[parent] = True
        return ended_parents[parent]

    reaped = []
    for rid, run in by_id.items():
        tags = run.data.tags
        role = tags.get("sparsealign.role")
        if role == "pipeline" and rid in dead:
            why = "pipeline process gone"
        elif role == "job" and owner_alive(tags) is False:
            why = "job process gone"
        elif role == "job" and tags.get("mlflow.parentRunId") and parent_ended(tags["mlflow.parentRunId"]):
            why = "its pipeline is no longer running"
        else:
            continue
        _mark_failed(client, rid, f"{why} (pid {tags.get('sparsealign.pid', '?')} on "
                                  f"{tags.get('sparsealign.host', '?')}); marked FAILED {reason_by}".strip())
        reaped.append(rid)
    return reaped


def _mark_failed(client, run_id: str, reason: str) -> None:
    client.set_tag(run_id, "sparsealign.reaped", reason[:5000])
    client.set_terminated(run_id, status="FAILED")


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
    client = _client()
    experiment_id = _experiment_id(client, experiment)
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
    PARENT_RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PARENT_RUN_FILE.write_text(run_id)
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
    client = _client()
    experiment_id = _experiment_id(client, experiment)
    reap_orphans(client, experiment_id, f"by the launcher at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    tags = {**git_state(), "host": socket.gethostname(), "sparsealign.role": "pipeline",
            "sparsealign.launcher": "1", **process_tags(),
            "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}"}
    return client.create_run(experiment_id, tags=tags).info.run_id


def close_if_running(run_id: str, status: str) -> None:
    """End ``run_id`` with ``status`` unless Snakemake's hooks already ended it."""
    client = _client()
    if client.get_run(run_id).info.status == "RUNNING":
        close_parent(client, run_id, status)


def end_parent(status: str = "FINISHED") -> None:
    """Close the parent run (``FINISHED`` or ``FAILED``), failing jobs that never reported."""
    run_id = os.environ.get(PARENT_ENV)
    if not enabled() or not run_id:
        return
    close_parent(_client(), run_id, status)


def close_parent(client, run_id: str, status: str) -> None:
    """Mark the ``RUNNING`` children of ``run_id`` ``FAILED``, then end ``run_id``."""
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        max_results=5000)
    for child in children:
        _mark_failed(client, child.info.run_id, "the pipeline ended while this job was RUNNING "
                                                "(its process was killed)")
    client.set_terminated(run_id, status=status)


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
    client = _client()
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
    return None, _experiment_id(client, DEFAULT_EXPERIMENT)

