"""One pending re-evaluation timer in Snakemake's job scheduler, not one per event.

Snakemake 9's local scheduler (``JobScheduler.schedule``, with the default job rate
limit of 100 jobs/s) ends every pass that starts nothing by starting a
``threading.Timer`` that wakes the scheduler one timespan (1 s) later. The wake-up runs
a pass, which starts another timer; and every job start or finish adds a pass, so one
more timer circulates for good. After n finished jobs n timers wake the scheduler n
times a second: in the default run (211 jobs) Snakemake itself used 42 % of a core
after 150 jobs, on a 2-core machine, and its process held 152 threads (measured with
py-spy; cf. snakemake/snakemake#3804).

:func:`coalesce_reevaluation_timers`, called by the workflow (``workflow/rules/common.smk``)
in the Snakemake process, keeps at most one such timer pending per scheduler: the
scheduler still wakes within a timespan of when it asked to, which is all the rate
limit needs. The timer is a daemon thread, so it never holds up Snakemake's exit.
"""

from __future__ import annotations

import threading

PENDING = "_sparsealign_reevaluation_pending"


def coalesced_reevaluation(scheduler, delay: float) -> None:
    """Wake ``scheduler`` (release its ``_open_jobs``) after ``delay`` s, unless a wake-up
    is already pending."""
    lock = scheduler.__dict__.setdefault("_sparsealign_reevaluation_lock", threading.Lock())
    with lock:
        if getattr(scheduler, PENDING, False):
            return
        setattr(scheduler, PENDING, True)

    def wake():
        with lock:
            setattr(scheduler, PENDING, False)
        scheduler._open_jobs.release()

    timer = threading.Timer(delay, wake)
    timer.daemon = True
    timer.start()


def coalesce_reevaluation_timers() -> bool:
    """Install :func:`coalesced_reevaluation` on Snakemake's ``JobScheduler``; False (and
    nothing changed) where this Snakemake has no such method."""
    try:
        from snakemake.scheduling.job_scheduler import JobScheduler
    except ImportError:
        return False
    if not hasattr(JobScheduler, "_schedule_reevalutation"):
        return False
    JobScheduler._schedule_reevalutation = coalesced_reevaluation
    return True
