"""The smoke pipeline through Snakemake's SLURM executor on a live single-node SLURM 22.05.

``sparsealign run --config config/smoke.yaml --profile slurm`` runs against munge, MariaDB,
slurmdbd, slurmctld and slurmd started on 127.0.0.1 (see slurm_cluster.py). Account and
partition reach the profile as a lab sets them, through SBATCH_ACCOUNT / SBATCH_PARTITION;
the plugin's status command is its default, sacct, on real accounting.

The node is this machine (two job slots per core, its memory) plus stand-in GPUs, so the
profile's ``--gpus=1`` on SAE training is scheduled for real. CPU and memory requests are fitted to
the node (see fit_to_node: the profile asks 4 CPUs and 32 GB for train_sae); account,
partition, GPU, wall times and the status command are the profile's.

Skipped, saying why, where the Debian packages are missing (``.ci/run`` installs them) or
the tests do not run as root (slurmd and SlurmUser=root need it).
"""

import os
import re
import signal
import subprocess
import sys
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


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    if os.environ.get("SPARSEALIGN_SLURM_TEST") == "0":
        pytest.skip("live SLURM test: turned off by SPARSEALIGN_SLURM_TEST=0")
    if os.geteuid() != 0:
        pytest.skip("live SLURM test: needs root (slurmd, SlurmUser=root)")
    missing = slurm_cluster.missing_programs()
    if missing:
        pytest.skip(f"live SLURM test: {', '.join(missing)} not installed "
                    f"(apt-get install {slurm_cluster.PACKAGES})")
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


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


def run_pipeline(cluster, work: Path, env: dict) -> subprocess.CompletedProcess:
    """The SLURM run, in a process group of its own that is killed whatever happens."""
    command = slurm_command(cluster)
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
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


@pytest.fixture(scope="session")
def slurm_run(slurm, tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("slurm-e2e"))
    env = slurm_env(slurm, work)
    start = time.monotonic()
    proc = run_pipeline(slurm, work, env)
    elapsed = time.monotonic() - start
    print(f"\nSLURM smoke run: {elapsed:.0f} s, load average {os.getloadavg()}")
    assert proc.returncode == 0, _log(proc)[-6000:]
    return work, env, proc


def test_every_job_ran_as_a_slurm_job(slurm, slurm_run):
    work, _, proc = slurm_run
    jobs = sacct_jobs(slurm)
    print("sacct states:", dict(Counter(job["state"] for job in jobs)))
    assert jobs and all(job["state"] == "COMPLETED" for job in jobs), jobs
    assert Counter(job["rule"] for job in jobs) == _job_counts(_log(proc))
    assert {(job["account"], job["partition"]) for job in jobs} == {(slurm_cluster.ACCOUNT,
                                                                    slurm_cluster.PARTITION)}
    # The GPU is asked for on SAE training only (the SAEs and the settings sweep), and
    # slurmctld allocated it.
    assert all(("gres/gpu=1" in job["tres"]) == (job["rule"] in ("train_sae", "sae_sweep"))
               for job in jobs), jobs


def test_outputs_are_identical_to_the_local_run(slurm_run, smoke_run):
    work, _, _ = slurm_run
    local, _, _ = smoke_run
    ours, theirs = output_md5s(work), output_md5s(local)
    assert sorted(ours) == sorted(theirs)
    assert [path for path in ours if ours[path] != theirs[path]] == []
    assert (work / "results-smoke" / "report.html").stat().st_size > 10_000


def mlflow_runs(env):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000,
                              order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("sparsealign.role") == "job"]
    return parents, children


def test_mlflow_has_one_parent_and_one_child_per_slurm_job(slurm_run):
    _, env, proc = slurm_run
    parents, children = mlflow_runs(env)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    assert Counter(r.data.tags["snakemake.rule"] for r in children) == _job_counts(_log(proc))


def test_cancelled_slurm_run_resumes_with_the_same_command(slurm, slurm_run, smoke_run):
    """scancel every job and SIGKILL the submitting Snakemake midway; the same command finishes."""
    work, env, _ = slurm_run
    before = max(job["id"] for job in sacct_jobs(slurm))
    expected = output_md5s(smoke_run[0])
    # The toy experiment's summary and the report again: 2 jobs, cancelled once the summary
    # has completed while the report runs (each wave of jobs costs the plugin's status
    # polling, 14-36 s here, so the chain is kept short).
    toy = work / "results-smoke" / "toy"
    for path in ("alignment.csv", "summary.csv", "figure.png", "sae_quality.csv", "../report.html"):
        (toy / path).unlink()
    submitter = subprocess.Popen(slurm_command(slurm), cwd=work, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and submitter.poll() is None:
            states = [job["state"] for job in sacct_jobs(slurm, after=before)]
            if "COMPLETED" in states and "RUNNING" in states:
                break
            time.sleep(1)
        assert submitter.poll() is None, "the run ended before it could be cancelled midway"
    finally:
        kill_group(submitter)
    slurm.run("scancel", "--user", "root")
    while slurm.run("squeue", "-h", "-o", "%i").strip():
        time.sleep(1)
    cancelled = sacct_jobs(slurm, after=before)

    proc = run_pipeline(slurm, work, env)
    assert proc.returncode == 0, _log(proc)[-6000:]
    resumed = sacct_jobs(slurm, after=max(job["id"] for job in cancelled))
    print("sacct states, cancelled run:", dict(Counter(job["state"] for job in cancelled)),
          "resumed run:", dict(Counter(job["state"] for job in resumed)))
    assert "CANCELLED" in {job["state"] for job in cancelled}
    assert resumed and all(job["state"] == "COMPLETED" for job in resumed)
    assert Counter(job["rule"] for job in resumed) == _job_counts(_log(proc))
    assert output_md5s(work) == expected
    parents, children = mlflow_runs(env)
    assert [p.info.status for p in parents] == ["FINISHED", "FAILED", "FINISHED"]
    assert "RUNNING" not in {r.info.status for r in children}
