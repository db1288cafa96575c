"""``sparsealign ui`` stops within 5 s of SIGINT or SIGTERM, with every process it started,
even when it inherited SIGINT as ignored (a background job of a non-interactive shell)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

STOP_SECONDS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_ui(port: int, backend_store_uri: str, cwd, env, log: Path, ignore_sigint=False):
    """``python -m sparsealign ui`` in its own session, its output in ``log``."""
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "sparsealign", "ui", "--port", str(port),
             "--backend-store-uri", backend_store_uri],
            cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_ignore_sigint if ignore_sigint else None)


def wait_for_health(url: str, ui: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Wait until the server answers on ``/health`` (slow on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ui.poll() is not None:
            raise RuntimeError(f"ui exited with {ui.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url}/health did not answer in {timeout} s: {log.read_text()[-3000:]}")


def _stat(pid) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process, from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
    return state, int(ppid), int(pgrp)


def _all_pids():
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still alive (zombies are dead, not yet reaped)."""
    return [pid for pid in _all_pids()
            if (stat := _stat(pid)) and stat[2] == pgid and stat[0] != "Z"]


def server_groups(ui: subprocess.Popen) -> set[int]:
    """Process groups of the ui's children: the ``mlflow server`` it started in its own session."""
    return {stat[2] for pid in _all_pids() if (stat := _stat(pid)) and stat[1] == ui.pid}


def force_stop(ui: subprocess.Popen, groups=()) -> None:
    """Teardown that never leaves a server behind, whatever state the ui is in."""
    for pgid in {ui.pid, *groups, *server_groups(ui)}:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ui.wait(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ui_stops_with_every_process_it_started(tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    port, log = free_port(), tmp_path / "ui.log"
    ui = start_ui(port, f"sqlite:///{tmp_path}/mlflow.db", None, env, log, ignore_sigint=True)
    groups = set()
    try:
        wait_for_health(f"http://127.0.0.1:{port}", ui, log)
        groups = server_groups(ui)
        assert groups and ui.pid not in groups  # the server runs in a group of its own
        server = next(pid for pid in _all_pids() if (stat := _stat(pid)) and stat[1] == ui.pid)
        assert b"MLFLOW_DISABLE_TELEMETRY=true" in Path(f"/proc/{server}/environ").read_bytes()

        os.kill(ui.pid, signum)
        assert ui.wait(timeout=STOP_SECONDS) == 0, log.read_text()[-3000:]
        left = {pgid: live_members(pgid) for pgid in groups}
        assert not any(left.values()), f"processes left behind: {left}"
    finally:
        force_stop(ui, groups)
