"""The README's "Bring your own" section, run exactly as written: its YAML file, its model
module (outside src/), a temporary image folder and an npz recording, to the report."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, job_env, workdir


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced ``language`` block whose first line starts with ``first_line``."""
    for block in re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README has no {language} block starting {first_line!r}")


def write_study(work, n_images=48, n_neurons=12, seed=0):
    """Images, a recording of them, and the README's config and model module."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (work / "my_images").mkdir()
    names = [f"scene_{i:03d}" for i in range(n_images)]
    # Each image is one colour plus pixel noise; the neurons respond to that colour.
    colours = rng.uniform(0, 255, size=(n_images, 1, 1, 3))
    images = np.clip(colours + rng.normal(0, 8, size=(n_images, 16, 16, 3)), 0, 255).astype(np.uint8)
    for name, image in zip(names, images):
        Image.fromarray(image).save(work / "my_images" / f"{name}.png")
    drive = colours.reshape(n_images, 3) @ rng.normal(size=(3, n_neurons)) / 100
    trials = drive[:, :, None] + 0.2 * rng.normal(size=(n_images, n_neurons, 3))
    # Ids listed in reverse order: matching is by id, never by position.
    order = np.arange(n_images)[::-1]
    np.savez(work / "my_v1.npz", responses=trials[order])
    (work / "my_v1_ids.txt").write_text("\n".join(names[i] for i in order) + "\n")
    (work / "my_study.yaml").write_text(readme_block("yaml", "# my_study.yaml"))
    (work / "my_lab_model.py").write_text(readme_block("python", "# my_lab_model.py"))


@pytest.mark.e2e
def test_readme_bring_your_own_runs_to_the_report(tmp_path):
    work = workdir(tmp_path)
    write_study(work)
    command = readme_block("bash", "sparsealign run --config my_study.yaml").strip().split()
    proc = subprocess.run([sys.executable, "-m", "sparsealign", *command[1:], "--cores", "2"],
                          cwd=work, env=job_env(work), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = work / "results-my-study"
    assert f"report: {out / 'report.html'}" in proc.stdout
    table = pd.read_csv(out / "net_to_v1" / "alignment.csv")
    assert set(table["comparison"]) == {"Neuron→V1", "SAE→V1", "RandomSAE→V1",
                                        "SAE→V1 − Neuron→V1", "SAE→V1 − RandomSAE→V1"}
    assert set(table["layer"]) == {"conv1", "conv2"} and (table["n_stimuli"] == 48).all()
    # The npz had a repeat axis: the score rows carry the split-half noise ceiling.
    scores = table[~table["comparison"].str.contains("−")]
    assert scores["ceiling"].notna().all() and scores["ci_low"].notna().all()
    ridge = table[(table["metric"] == "ridge") & (table["comparison"] == "Neuron→V1")]
    assert (ridge["mean"] > 0.3).all()  # the recording is a noisy linear read-out of colour
    html = (out / "report.html").read_text()
    assert "Experiment: net_to_v1" in html and "predicting my V1 recording" in html
    assert (out / "systems" / "my_v1" / "responses_repeats.zarr").is_dir()
