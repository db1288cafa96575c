"""Cluster execution without code changes: the workflow profiles build the DAG, the GPU
lands on SAE training, and the sbatch calls the SLURM plugin makes are the right ones.

No cluster runs here. SLURM's commands are stand-ins on PATH: ``sbatch`` records its
arguments and the environment it would export and submits nothing, ``sacct`` reports
every recorded job FAILED, so Snakemake stops right after the submissions. Kubernetes
needs S3 even for a dry run; that test is in test_services_s3.py.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, SNAKEMAKE, job_env, workdir
from test_crash_integrity import toy_only_config

pytestmark = pytest.mark.cluster

PROFILES = ROOT / "workflow" / "profiles"
LAUNCHER = [sys.executable, "-m", "sparsealign.launcher"]


def _run(cmd, work, env, timeout=600):
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def job_resources(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, resources) per job of a ``snakemake -n`` listing."""
    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif rule and (match := re.match(r"^\s+resources: (.*)$", line)):
            pairs = (item.split("=", 1) for item in match.group(1).split(", "))
            jobs.append((rule, {k: v for k, v in pairs}))
            rule = None
    return jobs


@pytest.mark.parametrize("name", ["local", "slurm", "kubernetes"])
def test_profile_holds_executor_settings_only(name):
    profile = yaml.safe_load((PROFILES / name / "config.yaml").read_text())
    assert not {"configfile", "configfiles", "config"} & set(profile), "science lives in config/"
    executor = {"local": None, "slurm": "slurm", "kubernetes": "kubernetes"}[name]
    assert profile.get("executor") == executor
    assert profile.get("rerun-incomplete") is True
    if name == "kubernetes":
        assert {"MLFLOW_TRACKING_URI", "SPARSEALIGN_PARENT_RUN_ID"} <= set(profile["envvars"])
        assert profile["default-storage-provider"] == "s3"
        assert profile["set-resources"]["train_sae"]["gpu_manufacturer"] == "nvidia"
    if name != "local":
        for rule in ("train_sae", "sae_sweep", "toy_model"):
            assert profile["set-resources"][rule]["mem_mb"] > 0


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_dry_run_with_profile_builds_the_dag_and_puts_the_gpu_on_sae_training(name, tmp_path):
    work = workdir(tmp_path)
    config = toy_only_config(work)
    proc = _run(SNAKEMAKE + ["-n", "--workflow-profile", f"workflow/profiles/{name}",
                             "--configfile", config], work, job_env(work))
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_resources(proc.stdout + proc.stderr)
    rules = sorted(rule for rule, _ in jobs)
    assert rules.count("train_sae") == 2 and rules.count("toy_model") == 2 and "report" in rules
    for rule, resources in jobs:
        assert (resources.get("gpu") == "1") == (rule == "train_sae"), (rule, resources)
    if name == "slurm":
        sae = next(res for rule, res in jobs if rule == "train_sae")
        assert (sae["mem_mb"], sae["runtime"], sae["cpus_per_task"]) == ("32000", "480", "4")
        toy = next(res for rule, res in jobs if rule == "toy_model")
        assert (toy["mem_mb"], toy["runtime"]) == ("4000", "120")


FAKE_SBATCH = """\
#!{python}
# Stand-in sbatch: record the call and the environment it would export; submit nothing.
import json, os, sys
log = os.environ["FAKE_SLURM_LOG"]
env = {{k: os.environ.get(k) for k in ("SPARSEALIGN_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")}}
with open(log, "a") as handle:
    handle.write(json.dumps({{"argv": sys.argv[1:], "env": env}}) + "\\n")
with open(log) as handle:
    print(4240 + sum(1 for _ in handle))  # --parsable: the job id
"""
FAKE_SACCT = """\
#!{python}
# Stand-in sacct: every recorded job FAILED (nothing ran).
import os
with open(os.environ["FAKE_SLURM_LOG"]) as handle:
    for i, _ in enumerate(handle, 1):
        print(f"{{4240 + i}}|FAILED")
"""


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
    for name in ("sinfo", "squeue", "scontrol", "sacctmgr", "sshare"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir, tmp_path / "sbatch-calls.jsonl"


def _toy_inputs(work: Path) -> None:
    """The stores train_sae reads, written directly (no toy training needed)."""
    from sparsealign import schema

    rng = np.random.default_rng(0)
    ids = [f"toy0-{i:07d}" for i in range(200)]
    for path, units, kind in (("results-t/systems/toy/m8_seed0.zarr", 8, "neurons"),):
        ds = schema.make_store(rng.random((200, units)), ids, [f"hidden/{j:05d}" for j in range(units)],
                               source="toy", layer="hidden", kind=kind)
        schema.save_store(ds, work / path)


def test_slurm_plugin_submits_the_sae_job_with_one_gpu_and_the_mlflow_parent(tmp_path, fake_slurm):
    from mlflow.tracking import MlflowClient

    bin_dir, calls = fake_slurm
    work = workdir(tmp_path)
    config = toy_only_config(work)
    _toy_inputs(work)
    env = job_env(work)
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_SLURM_LOG=str(calls))
    proc = _run(SNAKEMAKE + [
        "results-t/toy/sae/toy/m8_seed0.g0.s0.f100.sae.pt", "results-t/stimuli/toy_features/seed0.zarr",
        "--workflow-profile", "workflow/profiles/slurm", "--configfile", config,
        "--allowed-rules", "train_sae", "toy_features",
        "--default-resources", "slurm_account=lab", "slurm_partition=gpu", "mem_mb=4000",
        "runtime=60", "cpus_per_task=1",
        "--slurm-init-seconds-before-status-checks", "1"], work, env)
    assert proc.returncode != 0  # sacct says FAILED: nothing ran, nothing is pretended
    submitted = {}
    for line in calls.read_text().splitlines():
        record = json.loads(line)
        comment = record["argv"][record["argv"].index("--comment") + 1]
        submitted[comment.split("_wildcards")[0].removeprefix("rule_")] = record
    assert set(submitted) == {"train_sae", "toy_features"}

    sae = submitted["train_sae"]["argv"]
    wrap = next(a for a in sae if a.startswith("--wrap="))
    flags = " ".join(a for a in sae if not a.startswith("--wrap="))
    for expected in ("--export=ALL", "-A lab", "-p gpu", "-t 480", "--mem 32000", "--requeue",
                     "--cpus-per-task=4", f"-D {work}", "--gpus=1"):
        assert expected in flags, (expected, flags)
    assert "--target-jobs 'train_sae:exp=toy,system=toy,member=m8_seed0,run=g0.s0.f100'" in wrap
    assert "--no-hooks" in wrap and "--executor slurm-jobstep" in wrap
    data = " ".join(submitted["toy_features"]["argv"])
    assert "--gpus" not in data and "-t 15" in data and "--mem 2000" in data

    # The jobs would see the pipeline's MLflow parent run and store (sbatch --export=ALL).
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-t")
    parents = client.search_runs([experiment.experiment_id], "tags.`sparsealign.role` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    for record in submitted.values():
        assert record["env"] == {"SPARSEALIGN_PARENT_RUN_ID": parents[0].info.run_id,
                                 "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}


def test_launcher_opens_the_parent_first_and_the_pipeline_adopts_it(tmp_path):
    from mlflow.tracking import MlflowClient

    work = workdir(tmp_path)
    config = toy_only_config(work)
    env = job_env(work)
    env.pop("SPARSEALIGN_PARENT_RUN_ID", None)
    proc = _run(LAUNCHER + ["--", "snakemake", "results-t/stimuli/toy_features/seed0.zarr", "--cores", "1",
                            "--configfile", config], work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc_bad = _run(LAUNCHER + ["--", "snakemake", "results-t/no/such/target", "--cores", "1",
                                "--configfile", config], work, env)
    assert proc_bad.returncode != 0

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-t")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline"]
    jobs = [r for r in runs if r.data.tags.get("sparsealign.role") == "job"]
    assert [p.info.status for p in parents] == ["FINISHED", "FAILED"]
    assert all(p.data.tags["sparsealign.launcher"] == "1" for p in parents)
    assert parents[0].data.params["systems.toy.steps"] == "200"  # onstart adopted it and logged the config
    assert [j.data.tags["mlflow.parentRunId"] for j in jobs] == [parents[0].info.run_id]
    assert jobs[0].info.status == "FINISHED"


def test_launcher_is_a_thin_wrapper_for_dry_runs(tmp_path):
    """A dry run opens no MLflow run but still satisfies the profile's --envvars."""
    work = workdir(tmp_path)
    config = toy_only_config(work)
    (work / "check_env.smk").write_text(textwrap.dedent("""
        envvars: "SPARSEALIGN_PARENT_RUN_ID", "MLFLOW_TRACKING_URI"
        include: "Snakefile"
    """))
    env = job_env(work)
    env.pop("SPARSEALIGN_PARENT_RUN_ID", None)
    proc = _run(LAUNCHER + ["--", "snakemake", "-n", "-s", "check_env.smk", "--configfile", config],
                work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "mlruns").exists()
