"""Snakemake's scheduler keeps at most one re-evaluation timer pending (not one per job
run so far), and the timer never holds up Snakemake's exit."""

import subprocess
import sys
import threading
import time

from sparsealign.scheduler_timers import coalesce_reevaluation_timers, coalesced_reevaluation


class _Scheduler:
    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def _wakeups(scheduler) -> int:
    n = 0
    while scheduler._open_jobs.acquire(blocking=False):
        n += 1
    return n


def test_many_requests_start_one_timer_and_wake_the_scheduler_once():
    scheduler = _Scheduler()
    before = threading.active_count()
    for _ in range(200):
        coalesced_reevaluation(scheduler, 0.2)
    assert threading.active_count() - before <= 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and threading.active_count() > before:
        time.sleep(0.05)
    assert _wakeups(scheduler) == 1
    coalesced_reevaluation(scheduler, 0.01)  # once it fired, the next request starts one
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (n := _wakeups(scheduler)):
        time.sleep(0.05)
    assert n == 1


def test_the_workflow_installs_it_on_snakemakes_scheduler():
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert coalesce_reevaluation_timers()
    assert JobScheduler._schedule_reevalutation is coalesced_reevaluation


def test_a_pending_timer_does_not_hold_up_exit():
    code = ("import threading; from sparsealign.scheduler_timers import coalesced_reevaluation\n"
            "class S: _open_jobs = threading.Semaphore(0)\n"
            "coalesced_reevaluation(S(), 3600)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
