"""The smoke config through Snakemake, end to end, with MLflow on a temporary SQLite store."""

import re
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest

from conftest import SNAKEMAKE, workdir as _workdir, job_env as _env


def _job_counts(log: str) -> Counter:
    """The 'Job stats' table Snakemake prints before it runs: rule → number of jobs."""
    table = log[log.index("Job stats:"):].split("\n\n")[0]
    counts = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+(\d+)$", table, re.M)})
    del counts["total"], counts["all"]
    return counts


@pytest.mark.e2e
def test_smoke_pipeline_writes_table_figure_and_report(smoke_run):
    work, _, proc = smoke_run
    assert proc.stdout.strip().splitlines()[-1] == f"report: {work / 'results-smoke' / 'report.html'}"
    assert "cost of each stage" in proc.stdout and re.search(r"^  train_sae\s+\d+", proc.stdout, re.M)
    out = work / "results-smoke"
    table = pd.read_csv(out / "toy" / "alignment.csv")
    comparisons = set(table["comparison"])
    assert {"Neuron→Neuron", "SAE→Neuron", "SAE→SAE", "RandomSAE→Neuron", "RandomSAE→SAE",
            "GroundTruth→Neuron", "GroundTruth→SAE"} <= comparisons
    assert {"semi_matching", "soft_matching", "ridge", "best_corr", "mcc"} <= set(table["metric"])
    assert table[["mean"]].notna().all().all()
    assert (out / "toy" / "figure.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Provenance" in html and "Cost of each stage" in html
    for experiment in ("toy", "v4", "dnn"):
        assert f"Experiment: {experiment}" in html
    assert html.count("Per-unit score distributions") == 3 and html.count("Per-layer curves") == 2
    assert "<td>align_pair</td>" in html and "<td>align_recording</td>" in html  # provenance
    assert "cowley2023_v4/responses_raw/responses_210325.npy" in html
    v4 = pd.read_csv(out / "v4" / "alignment.csv")
    assert set(v4["comparison"]) == {"Neuron→V4", "SAE→V4", "RandomSAE→V4",
                                     "SAE→V4 − Neuron→V4", "SAE→V4 − RandomSAE→V4"}
    assert set(v4["layer"]) == {"conv1", "conv2"}
    assert set(v4["session"].astype(str)) == {"210325", "190923"}  # each session separately
    scores = v4[~v4["comparison"].str.contains("−")]
    repeats = scores["session"].astype(str) == "210325"  # the one session with raw repeats
    assert (scores[repeats]["ceiling"] > 0).all() and scores[repeats]["normalised"].notna().all()
    assert scores[~repeats]["ceiling"].isna().all()
    assert (scores["ci_low"] <= scores["mean"]).all() and (scores["mean"] <= scores["ci_high"]).all()
    assert (scores["n_seeds"] == scores["comparison"].map(lambda c: 1 if c == "Neuron→V4" else 2)).all()
    contrasts = v4[v4["comparison"].str.contains("−")]
    assert set(contrasts["verdict"]) <= {"gain", "loss", "no difference"} and len(contrasts) == 2 * 2 * 2 * 2
    summary = pd.read_csv(out / "v4" / "summary.csv")
    assert summary["ci_low"].notna().all() and "verdict" in summary
    quality = pd.read_csv(out / "v4" / "sae_quality.csv")
    assert len(quality) == 2 * 2 * 2  # layers × held-out groups × seeds
    assert quality["heldout_n_rows"].gt(0).all() and quality["heldout_fvu"].notna().all()
    assert (out / "toy" / "theory.png").stat().st_size > 10_000 and "theory" in html
    # The SAE training rows of the smoke config: 4 positions of each of the 144 images.
    import zarr

    from sparsealign import schema

    rows = zarr.open_group(out / "systems" / "vgg16_hed" / "conv2.rows.zarr", mode="r")
    assert rows["responses"].shape == (144 * 4, 128) and rows["responses"].dtype == "float16"
    assert rows["image"].shape == (144,) and rows["image_index"][:].max() == 143
    centre = schema.open_store(out / "systems" / "vgg16_hed" / "conv2.zarr")
    assert set(centre["stimulus"].values) == set(rows["image"][:])  # one pass serves both
    dnn = pd.read_csv(out / "dnn" / "alignment.csv")
    assert set(dnn["system_a"]) == {"cowley_direct_fit"} and "SAE→SAE" in set(dnn["comparison"])


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
    ran = _job_counts(proc.stdout + proc.stderr)
    assert Counter(r.data.tags["snakemake.rule"] for r in children) == ran
    # toy pair; two VGG16 layers × two held-out groups × two seeds; two compact models
    assert ran["train_sae"] == 2 + 2 * 2 * 2 + 2 and ran["sae_sweep"] == 2
    sae_run = next(r for r in children if r.data.tags["snakemake.rule"] == "train_sae"
                   and r.data.tags["wildcard.exp"] == "toy")
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
def test_a_run_with_nothing_to_do_prints_no_costs(smoke_run):
    """Costs are this invocation's: one that ran no job has none (and never reads MLflow)."""
    work, env, _ = smoke_run
    command = ["run", "--config", "config/smoke.yaml", "--cores", "2"]
    proc = subprocess.run([sys.executable, "-m", "sparsealign", *command], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert "cost of each stage" not in proc.stdout and "report: " in proc.stdout


@pytest.mark.e2e
def test_config_failing_the_schema_stops_before_any_job(tmp_path):
    work = _workdir(tmp_path)
    text = (work / "config" / "smoke.yaml").read_text().replace("hidden_sizes: [8]", "hidden_sizes: eight")
    (work / "config" / "bad.yaml").write_text(text)
    proc = subprocess.run(SNAKEMAKE + ["--cores", "1", "--configfile", "config/bad.yaml"], cwd=work,
                          env=_env(work), capture_output=True, text=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].endswith("config/bad.yaml: config key systems.toy.hidden_sizes: 'eight' is not "
                              "of type 'array'; expected a config matching config.schema.yaml")
    assert not (work / "results").exists() and not (work / "mlruns").exists()


@pytest.mark.e2e
def test_report_command_rebuilds_summaries_and_report(smoke_run):
    work, env, _ = smoke_run
    report = work / "results-smoke" / "report.html"
    report.unlink()
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "report", "--config", "config/smoke.yaml"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Experiment: toy" in report.read_text()
    jobs = _job_counts(proc.stdout + proc.stderr)
    assert jobs == Counter({"summarise": 3, "report": 1})
