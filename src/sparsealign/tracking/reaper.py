"""Runs left ``RUNNING`` by killed processes, found and marked ``FAILED``.

Each run is tagged (:func:`process_tags`) with the host, pid and start time of the
process that owns it; :func:`reap_orphans` fails the runs whose owner is gone.
"""

from __future__ import annotations

import os
import socket


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
    if not pid_alive(pid):
        return False
    started = tags.get("sparsealign.pid_started", "")
    return not started or _started(pid) in ("", started)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (it may be a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    return True


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
        mark_failed(client, rid, f"{why} (pid {tags.get('sparsealign.pid', '?')} on "
                                 f"{tags.get('sparsealign.host', '?')}); marked FAILED {reason_by}".strip())
        reaped.append(rid)
    return reaped


def mark_failed(client, run_id: str, reason: str) -> None:
    """End ``run_id`` ``FAILED``, with ``reason`` in its ``sparsealign.reaped`` tag."""
    client.set_tag(run_id, "sparsealign.reaped", reason[:5000])
    client.set_terminated(run_id, status="FAILED")
