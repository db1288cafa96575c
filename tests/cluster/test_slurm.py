"""The smoke pipeline through Snakemake's SLURM executor on a live single-node SLURM 22.05.

``sparsealign run --config config/smoke.yaml --profile slurm`` runs against munge, MariaDB,
slurmdbd, slurmctld and slurmd started on 127.0.0.1 (see slurm_cluster.py). Account and
partition reach the profile as a lab sets them, through SBATCH_ACCOUNT / SBATCH_PARTITION;
the plugin's status command is its default, sacct, on real accounting.

The node is this machine (two job slots per core, its memory) plus stand-in GPUs, so the
profile's ``--gpus=1`` on SAE training is scheduled for real. CPU and memory requests are
fitted to the node (see fit_to_node: the profile asks 4 CPUs and 32 GB for train_sae);
account, partition, GPU, wall times and the status command are the profile's.

Skipped, saying why, where the Debian packages are missing (``.ci/run`` installs them) or
the tests do not run as root (slurmd and SlurmUser=root need it).
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yte

from conftest import ROOT, job_env, workdir
from test_pipeline_e2e import _job_counts

import slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
COMPARED = ("results-smoke", "data/raw")  # every file under these, except the report


def skip_reason() -> str | None:
    if os.environ.get("SPARSEALIGN_SLURM_TEST") == "0":
        return "live SLURM test: turned off by SPARSEALIGN_SLURM_TEST=0"
    if os.geteuid() != 0:
        return "live SLURM test: needs root (slurmd, SlurmUser=root)"
    missing = slurm_cluster.missing_programs()
    if missing:
        return (f"live SLURM test: {', '.join(missing)} not installed "
                f"(apt-get install {slurm_cluster.PACKAGES})")
    return None


class SlurmSession:
    """The cluster, the SLURM smoke run and the cancelled-and-resumed rerun, in a thread.

    The SLURM run spends most of its time waiting (SLURM's and Snakemake's start-up, the
    plugin's status polling), so it runs beside the other tests of its xdist worker, the
    local smoke run among them: the first test of the smoke run's group starts it
    (conftest.py orders it first and the other tests of this module last), and the tests
    read what it recorded. What a later step changes (outputs, MLflow runs) is recorded
    as soon as the step before it ends.
    """

    def __init__(self, root: Path):
        self.root, self.error, self.cluster = root, None, None
        self.procs = []                     # every process group it started, for stop()
        self.ready = threading.Event()      # the cluster is up (or failed to start)
        self.thread = threading.Thread(target=self._run, name="slurm-session", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            try:
                self.cluster = slurm_cluster.start(self.root / "slurm")
            finally:
                self.ready.set()
            (self.root / "run").mkdir()
            self.work = workdir(self.root / "run")
            self.env = slurm_env(self.cluster, self.work)
            start = time.monotonic()
            self.proc = run_pipeline(self.cluster, self.work, self.env, self.procs.append)
            self.seconds = time.monotonic() - start
            self.load = os.getloadavg()
            self.jobs = sacct_jobs(self.cluster)
            self.md5s = output_md5s(self.work)
            self.mlflow = mlflow_runs(self.env)
            if self.proc.returncode == 0:
                self.resume = cancel_and_resume(self.cluster, self.work, self.env,
                                                self.procs.append)
        except BaseException as exc:  # re-raised in the tests that read the session
            self.error = exc
            self.ready.set()

    def wait(self) -> "SlurmSession":
        self.thread.join(timeout=3600)
        if self.thread.is_alive():
            raise TimeoutError("the SLURM session did not end within an hour")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        """At the end of the test session; a run still going (its tests deselected, the
        session interrupted) is killed with its process group."""
        if self.thread.is_alive():
            for proc in self.procs:
                kill_group(proc)
        self.thread.join(timeout=300)
        if self.cluster is not None:
            self.cluster.stop()


@pytest.fixture(scope="session")
def slurm_session(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    session = SlurmSession(tmp_path_factory.mktemp("slurm-session"))
    yield session
    session.stop()


@pytest.fixture
def slurm(slurm_session):
    """The session once it has ended (cluster still up until the end of the test session)."""
    session = slurm_session.wait()
    assert session.proc.returncode == 0, _log(session.proc)[-6000:]
    return session


def fit_to_node(cluster) -> list[str]:
    """The profile's set-threads/set-resources, fitted to the test node.

    One CPU (a job slot of the node) and one thread per job, as in the local smoke run
    (`--cores 2`, rules' own threads), so that jobs share the node and the byte comparison
    sees the same thread counts; memory at most one slot's share of the node's. Given on the
    command line, these replace the profile's lists, so all of them are passed.
    """
    profile = yte.process_yaml(PROFILE.read_text(), require_use_yte=True)
    caps = {"cpus_per_task": 1, "mem_mb": cluster.mem_mb // cluster.cpus}
    threads = [f"{rule}=1" for rule in profile["set-threads"]]
    resources = [f"{rule}:{key}={min(value, caps[key]) if key in caps else value}"
                 for rule, values in profile["set-resources"].items() for key, value in values.items()]
    return ["--set-threads", *threads, "--set-resources", *resources]


def slurm_command(cluster) -> list[str]:
    return [sys.executable, "-m", "sparsealign", "run", "--config", "config/smoke.yaml",
            "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2",
            *fit_to_node(cluster)]


def slurm_env(cluster, work: Path) -> dict:
    env = job_env(work)
    env.update(SLURM_CONF=cluster.env["SLURM_CONF"], PATH=cluster.env["PATH"],
               SBATCH_ACCOUNT=slurm_cluster.ACCOUNT, SBATCH_PARTITION=slurm_cluster.PARTITION)
    return env


def sacct_jobs(cluster, after: int = 0) -> list[dict]:
    """Every job slurmdbd recorded with an id above ``after``: id, state, rule (from the comment)."""
    out = cluster.run("sacct", "-X", "-n", "-P", "-a", "-S", "2000-01-01", "-E", "now",
                      "-o", "JobIDRaw,State,Account,Partition,AllocTRES,Comment")
    jobs = []
    for line in out.splitlines():
        job_id, state, account, partition, tres, comment = line.split("|", 5)
        if int(job_id) > after:
            rule = re.match(r"rule_(.+?)(_wildcards|$)", comment)
            jobs.append({"id": int(job_id), "state": state.split()[0], "account": account,
                         "partition": partition, "tres": tres, "rule": rule and rule[1]})
    return jobs


def output_md5s(work: Path) -> dict:
    from sparsealign.provenance import path_md5

    return {str(path.relative_to(work)): path_md5(path)
            for folder in COMPARED for path in sorted((work / folder).rglob("*"))
            if path.is_file() and path.name != "report.html"}


def _log(proc) -> str:
    return proc.stdout + proc.stderr


def run_pipeline(cluster, work: Path, env: dict, register=None) -> subprocess.CompletedProcess:
    """The SLURM run, in a process group of its own that is killed whatever happens
    (``register(proc)`` is called with it first)."""
    command = slurm_command(cluster)
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if register:
        register(proc)
    try:
        out, err = proc.communicate(timeout=1200)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def mlflow_runs(env):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000,
                              order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("sparsealign.role") == "job"]
    return parents, children


def cancel_and_resume(cluster, work: Path, env: dict, register) -> dict:
    """scancel every job and SIGKILL the submitting Snakemake midway through a rerun of the
    toy experiment's summary and the report (2 jobs: cancelled once the summary has
    completed, while the report runs; a short chain, since each wave of jobs costs the
    plugin's status polling, 14-36 s here); then the same command again."""
    before = max(job["id"] for job in sacct_jobs(cluster))
    toy = work / "results-smoke" / "toy"
    for path in ("alignment.csv", "summary.csv", "figure.png", "sae_quality.csv", "../report.html"):
        (toy / path).unlink()
    start = time.monotonic()
    submitter = subprocess.Popen(slurm_command(cluster), cwd=work, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    register(submitter)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and submitter.poll() is None:
            states = [job["state"] for job in sacct_jobs(cluster, after=before)]
            if "COMPLETED" in states and "RUNNING" in states:
                break
            time.sleep(1)
        ended_early = submitter.poll() is not None
    finally:
        kill_group(submitter)
    cluster.run("scancel", "--user", "root")
    while cluster.run("squeue", "-h", "-o", "%i").strip():
        time.sleep(1)
    cancelled = sacct_jobs(cluster, after=before)
    proc = run_pipeline(cluster, work, env, register)
    resumed = sacct_jobs(cluster, after=max([before, *(job["id"] for job in cancelled)]))
    return {"ended_early": ended_early, "cancelled": cancelled, "proc": proc,
            "resumed": resumed, "md5s": output_md5s(work), "mlflow": mlflow_runs(env),
            "seconds": time.monotonic() - start}


def test_live_cluster_is_up(slurm_session):
    """Starts the session (this test runs first in its worker) and checks the cluster."""
    assert slurm_session.ready.wait(timeout=300), "the cluster did not start within 5 min"
    if slurm_session.error is not None:
        raise slurm_session.error
    cluster = slurm_session.cluster
    node, partition, state = cluster.run("sinfo", "-h", "-N", "-o", "%N %P %t").split()
    assert (node, partition.rstrip("*")) == ("localhost", slurm_cluster.PARTITION)
    assert state in ("idle", "mix", "alloc")   # the SLURM run may have started
    users = cluster.run("sacctmgr", "-n", "-P", "list", "assoc",
                        f"account={slurm_cluster.ACCOUNT}", "format=user").split()
    assert "root" in users


def test_every_job_ran_as_a_slurm_job(slurm, record_property):
    jobs = slurm.jobs
    # Printed at the end of the run by conftest.py's terminal summary.
    record_property("live SLURM", f"smoke run through --profile slurm: {slurm.seconds:.0f} s "
                    f"(load average at its end {slurm.load[0]:.1f}); sacct: "
                    f"{dict(Counter(job['state'] for job in jobs))}")
    assert jobs and all(job["state"] == "COMPLETED" for job in jobs), jobs
    assert Counter(job["rule"] for job in jobs) == _job_counts(_log(slurm.proc))
    assert {(job["account"], job["partition"]) for job in jobs} == {(slurm_cluster.ACCOUNT,
                                                                    slurm_cluster.PARTITION)}
    # The GPU is asked for on SAE training only (the SAEs and the settings sweep), and
    # slurmctld allocated it.
    assert all(("gres/gpu=1" in job["tres"]) == (job["rule"] in ("train_sae", "sae_sweep"))
               for job in jobs), jobs


def test_outputs_are_identical_to_the_local_run(slurm, smoke_run):
    ours, theirs = slurm.md5s, output_md5s(smoke_run[0])
    assert sorted(ours) == sorted(theirs)
    assert [path for path in ours if ours[path] != theirs[path]] == []
    assert (slurm.work / "results-smoke" / "report.html").stat().st_size > 10_000


def test_mlflow_has_one_parent_and_one_child_per_slurm_job(slurm):
    parents, children = slurm.mlflow
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    assert Counter(r.data.tags["snakemake.rule"] for r in children) == _job_counts(_log(slurm.proc))


def test_cancelled_slurm_run_resumes_with_the_same_command(slurm, smoke_run, record_property):
    """scancel every job and SIGKILL the submitting Snakemake midway; the same command finishes."""
    resume = slurm.resume
    cancelled, resumed, proc = resume["cancelled"], resume["resumed"], resume["proc"]
    record_property("live SLURM", f"cancel midway and resume: {resume['seconds']:.0f} s; sacct, "
                    f"cancelled run: {dict(Counter(job['state'] for job in cancelled))}, "
                    f"resumed run: {dict(Counter(job['state'] for job in resumed))}")
    assert not resume["ended_early"], "the run ended before it could be cancelled midway"
    assert proc.returncode == 0, _log(proc)[-6000:]
    assert "CANCELLED" in {job["state"] for job in cancelled}
    assert resumed and all(job["state"] == "COMPLETED" for job in resumed)
    assert Counter(job["rule"] for job in resumed) == _job_counts(_log(proc))
    assert resume["md5s"] == output_md5s(smoke_run[0])
    parents, children = resume["mlflow"]
    assert [p.info.status for p in parents] == ["FINISHED", "FAILED", "FINISHED"]
    assert "RUNNING" not in {r.info.status for r in children}
