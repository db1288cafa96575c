"""An S3-compatible object store (moto's server on 127.0.0.1, started and stopped by PID
here) as the DVC remote and as Snakemake's default storage provider; the Kubernetes
profile's dry run, which needs that storage to build the DAG."""

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SNAKEMAKE, job_env, workdir
from test_cluster_profiles import job_resources
from test_crash_integrity import toy_only_config
from test_services_mlflow import free_port, stop, wait_for_http

pytestmark = pytest.mark.services

BUCKET = "sparsealign-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1"}


def need(module: str, package: str, extra: str = "cluster") -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[{extra}]'); "
                    "this test needs it and does not pretend otherwise")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    need("moto", "moto[server]", "services")
    need("boto3", "boto3", "services")
    import boto3

    base = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = base / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/moto-api/", proc, log)
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield url, client
    finally:
        stop(proc)


def _env(work: Path) -> dict:
    env = job_env(work)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    return {**env, **CREDENTIALS}


def _sh(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def _tree_md5(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dvc_remote_on_s3_push_drop_cache_pull_gives_identical_files(s3, tmp_path):
    need("dvc_s3", "dvc-s3", "services")
    from sparsealign import schema

    url, client = s3
    repo = tmp_path / "repo"
    repo.mkdir()
    env = _env(repo)
    rng = np.random.default_rng(0)
    for name in ("neurons", "latents"):
        ds = schema.make_store(rng.normal(size=(64, 12)), [f"s{i:03d}" for i in range(64)],
                               [f"u/{j:05d}" for j in range(12)], source=name, layer="x", kind="neurons")
        schema.save_store(ds, repo / "results" / f"{name}.zarr")
    (repo / "results" / "alignment.csv").write_text("metric,mean\nridge,0.25\n")
    dvc = [sys.executable, "-m", "dvc"]
    _sh(["git", "init", "-q"], repo, env)
    _sh(dvc + ["init", "-q"], repo, env)
    _sh(dvc + ["remote", "add", "-d", "s3", f"s3://{BUCKET}/dvc"], repo, env)
    _sh(dvc + ["remote", "modify", "s3", "endpointurl", url], repo, env)
    _sh(dvc + ["add", "-q", "results"], repo, env)
    before = _tree_md5(repo / "results")
    recorded = (repo / "results.dvc").read_text()
    _sh(dvc + ["push"], repo, env)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/")["Contents"]]
    assert len(keys) == len(set(before.values())) + 1  # each distinct file, plus the manifest

    import shutil

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "results")
    _sh(dvc + ["pull"], repo, env)
    assert _tree_md5(repo / "results") == before
    assert (repo / "results.dvc").read_text() == recorded
    assert "in sync" in _sh(dvc + ["status", "--cloud"], repo, env)
    schema.open_store(repo / "results" / "latents.zarr")


def test_snakemake_runs_with_s3_as_default_storage(s3, tmp_path):
    need("snakemake_storage_plugin_s3", "snakemake-storage-plugin-s3")
    from sparsealign import schema

    url, client = s3
    work = workdir(tmp_path)
    config = toy_only_config(work)
    env = _env(work)
    storage = ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{BUCKET}/run",
               "--storage-s3-endpoint-url", url]
    target = "results-t/systems/toy/m8_seed0.zarr"
    proc = subprocess.run(SNAKEMAKE + [target, "--cores", "2", "--configfile", config, *storage],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="run/")["Contents"]}
    for store in ("results-t/stimuli/toy_features/seed0.zarr", target):
        assert f"run/{store}/zarr.json" in keys and f"run/{store}/responses/zarr.json" in keys
    assert "run/results-t/systems/toy/m8_seed0.pt" in keys
    assert not (work / "results-t").exists()  # outputs live in the bucket, not the workdir

    copy = tmp_path / "from-s3" / "activations.zarr"
    for key in (k for k in keys if k.startswith(f"run/{target}/")):
        dest = copy / key.removeprefix(f"run/{target}/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(dest))
    assert schema.open_store(copy).sizes["unit"] == 8

    again = subprocess.run(SNAKEMAKE + [target, "-n", "--configfile", config, *storage], cwd=work,
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.cluster
def test_kubernetes_profile_dry_run_builds_the_dag_on_s3_with_the_gpu_on_sae_training(s3, tmp_path):
    need("snakemake_storage_plugin_s3", "snakemake-storage-plugin-s3")
    need("snakemake_executor_plugin_kubernetes", "snakemake-executor-plugin-kubernetes")
    url, _ = s3
    work = workdir(tmp_path)
    config = toy_only_config(work)
    env = _env(work)
    env.pop("SPARSEALIGN_PARENT_RUN_ID", None)
    # Through the launcher, as the profile says; for a dry run it opens no MLflow run.
    proc = subprocess.run([sys.executable, "-m", "sparsealign.launcher", "--", "snakemake", "-n",
                           "--workflow-profile", "workflow/profiles/kubernetes",
                           "--configfile", config, "--default-storage-prefix", f"s3://{BUCKET}/k8s",
                           "--storage-s3-endpoint-url", url],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_resources(proc.stdout + proc.stderr)
    assert sorted(rule for rule, _ in jobs).count("train_sae") == 2
    for rule, resources in jobs:
        if rule == "train_sae":
            assert resources["gpu"] == "1" and resources["gpu_manufacturer"] == "nvidia"
            assert resources["mem_mb"] == "32000"
        else:
            assert "gpu" not in resources, (rule, resources)
    assert not (work / "mlruns").exists()
