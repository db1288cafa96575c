"""``sparsealign ui``: the MLflow server on loopback, stopped together with all it started.

``mlflow server`` runs in its own session (its process group is its pid) and forks a
uvicorn process, so stopping it means signalling the whole group. SIGINT and SIGTERM
get explicit handlers, whatever dispositions this process inherited: a background job
of a non-interactive shell starts with SIGINT ignored and would never see Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 2.0  # then SIGKILL: the whole stop stays well under 5 s on a loaded machine
POLL_SECONDS = 0.1


def server_command(port: int, backend_store_uri: str) -> list[str]:
    """The ``mlflow server`` command line: loopback only, one worker."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def serve(port: int, backend_store_uri: str | None = None) -> int:
    """Run the MLflow UI until SIGINT/SIGTERM (exit 0) or until the server exits (its code)."""
    from sparsealign.tracking import tracking_uri

    uri = backend_store_uri or tracking_uri()
    stop_requested = []
    # Handlers go in before the server starts: no signal is lost in between, and the
    # server (exec resets caught signals to their defaults) does not inherit an ignored SIGINT.
    previous = {signum: signal.signal(signum, lambda signum, frame: stop_requested.append(signum))
                for signum in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    # Browsing runs needs no background job runner (it forks several huey workers).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        server = subprocess.Popen(server_command(port, uri), start_new_session=True, env=env)
        try:
            print(f"MLflow UI: http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop", flush=True)
            while not stop_requested and server.poll() is None:
                time.sleep(POLL_SECONDS)  # a handler only sets a flag; this loop notices it
        finally:
            stop_group(server)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stop_requested else server.returncode


def stop_group(leader: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process group of ``leader``; SIGKILL what is left after ``grace`` seconds.

    Returns once the leader is reaped and its group is empty (or, should the system fail
    to reap orphaned workers, after another ``grace`` seconds).
    """
    _signal_group(leader.pid, signal.SIGTERM)
    _wait_for_empty_group(leader, grace)
    _signal_group(leader.pid, signal.SIGKILL)
    leader.wait()
    _wait_for_empty_group(leader, grace)  # orphaned workers are reaped by init


def _wait_for_empty_group(leader: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(leader) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_alive(leader: subprocess.Popen) -> bool:
    leader.poll()  # reap the leader if it exited, or it would count as alive
    try:
        os.killpg(leader.pid, 0)
    except ProcessLookupError:
        return False
    return True
