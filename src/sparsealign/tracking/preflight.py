"""Check the MLflow store before any job starts.

An unreachable server or an unusable SQLite file is one
:class:`~sparsealign.errors.SparsealignError` naming the store, not a job failing
half-way through the pipeline.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

from sparsealign.errors import fail
from sparsealign.tracking.client import (DEFAULT_TRACKING_URI, enabled, open_client, sqlite_path,
                                         tracking_uri)

PREFLIGHT_TIMEOUT_S = 10


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

    db = sqlite_path(uri)
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
        open_client()
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise fail(db, f"MLflow cannot use this store ({first})",
                   f"a current schema (`mlflow db upgrade {uri}`)") from None
