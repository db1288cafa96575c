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

- :func:`preflight` checks the store before any job starts (:mod:`.preflight`);
- SQLite: the schema is created or migrated under a file lock, and calls that meet a
  locked database are retried with backoff, so parallel jobs never fail on locking
  (:mod:`.client`);
- :func:`reap_orphans` marks ``FAILED`` the runs a killed pipeline left ``RUNNING``
  (:mod:`.reaper`); :func:`end_parent` does the same for jobs of its own pipeline that
  died unreported (:mod:`.runs`).

Everything goes through :class:`mlflow.tracking.MlflowClient` with batched calls; large
outputs are logged by path and hash (:mod:`sparsealign.provenance`), never copied.
"""

from sparsealign.tracking.client import enabled, tracking_uri
from sparsealign.tracking.preflight import preflight
from sparsealign.tracking.reaper import process_tags, reap_orphans
from sparsealign.tracking.runs import (PARENT_ENV, PARENT_RUN_FILE, JobRun, close_if_running,
                                       end_parent, job_run, open_launcher_parent, parent_run_id,
                                       parent_run_in_file, start_parent)

__all__ = ["PARENT_ENV", "PARENT_RUN_FILE", "JobRun", "close_if_running", "enabled", "end_parent",
           "job_run", "open_launcher_parent", "parent_run_id", "parent_run_in_file", "preflight",
           "process_tags", "reap_orphans", "start_parent", "tracking_uri"]
