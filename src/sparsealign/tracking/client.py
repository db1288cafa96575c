"""The MLflow client every tracking call goes through, and where it points.

SQLite serialises writers, so the client retries calls that meet a locked database and
is built under a file lock (building it creates or migrates the schema).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "sparsealign"
# SQLite errors that mean "try again", never "this is wrong".
_TRANSIENT = ("database is locked", "database table is locked", "database schema has changed")
_RETRIES = 10


def enabled() -> bool:
    """False when ``SPARSEALIGN_TRACKING`` is ``off``, ``0`` or ``false``."""
    return os.environ.get("SPARSEALIGN_TRACKING", "on").lower() not in ("off", "0", "false")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; ``None`` for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


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


def open_client():
    """A retrying MlflowClient on :func:`tracking_uri`."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is None:
        return _Retrying(MlflowClient(tracking_uri=uri))
    # Creating or migrating the schema from several processes at once corrupts the
    # alembic state ("duplicate column", "table _alembic_tmp_… already exists"): build
    # the client (whose store does both on creation) under a lock beside the database.
    with _file_lock(db.with_name(db.name + ".lock")):
        return _Retrying(MlflowClient(tracking_uri=uri))


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe against a concurrent create)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    db = sqlite_path(tracking_uri())
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
