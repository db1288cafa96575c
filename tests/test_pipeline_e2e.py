"""The smoke config through Snakemake, end to end, with MLflow on a temporary SQLite store."""

import subprocess

import pandas as pd
import pytest

from conftest import SNAKEMAKE, workdir as _workdir, job_env as _env


@pytest.mark.e2e
def test_smoke_pipeline_writes_table_figure_and_report(smoke_run):
    work, _, _ = smoke_run
    out = work / "results-smoke"
    table = pd.read_csv(out / "toy" / "alignment.csv")
    comparisons = set(table["comparison"])
    assert {"Neuron→Neuron", "SAE→Neuron", "SAE→SAE", "RandomSAE→Neuron", "RandomSAE→SAE",
            "GroundTruth→Neuron", "GroundTruth→SAE"} <= comparisons
    assert {"semi_matching", "soft_matching", "ridge", "best_corr", "mcc"} <= set(table["metric"])
    assert table[["mean"]].notna().all().all()
    assert (out / "toy" / "figure.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Provenance" in html


@pytest.mark.e2e
def test_mlflow_has_one_parent_and_one_child_per_job(smoke_run):
    from mlflow.tracking import MlflowClient

    work, env, proc = smoke_run
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("sparsealign.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    assert all(r.data.tags.get("mlflow.parentRunId") == parent_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    rules = sorted(r.data.tags["snakemake.rule"] for r in children)
    # 1 pair × 1 size: data, 2 models, 2 SAEs, 4 latent stores, 1 alignment, summary, report
    assert rules == sorted(["toy_data", "toy_model", "toy_model", "train_sae", "train_sae",
                            "latents", "latents", "latents", "latents", "align_toy_pair",
                            "summarise_toy", "report"])
    sae_run = next(r for r in children if r.data.tags["snakemake.rule"] == "train_sae")
    assert {"final_fvu", "final_l0"} <= set(sae_run.data.metrics)
    assert len(client.get_metric_history(sae_run.info.run_id, "sae_loss")) > 1
    assert sae_run.data.tags["git_commit"] and sae_run.data.tags["config_sha"]
    assert any(k.startswith("input_md5.") for k in sae_run.data.tags)


@pytest.mark.e2e
def test_rerun_has_nothing_to_do(smoke_run):
    work, env, _ = smoke_run
    proc = subprocess.run(SNAKEMAKE + ["-n", "--configfile", "config/smoke.yaml"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_config_failing_the_schema_stops_before_any_job(tmp_path):
    work = _workdir(tmp_path)
    (work / "config" / "bad.yaml").write_text("toy:\n  hidden_sizes: eight\n")
    proc = subprocess.run(SNAKEMAKE + ["--cores", "1", "--configfile", "config/bad.yaml"], cwd=work,
                          env=_env(work), capture_output=True, text=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].endswith("config/bad.yaml: config key toy.hidden_sizes: 'eight' is not of "
                              "type 'array'; expected a config matching config.schema.yaml")
    assert not (work / "results").exists() and not (work / "mlruns").exists()
