"""Jobs carry only what they read: adding a size or model reruns only the new jobs, a
layer only its network's jobs, a session only its held-out group's; moving the checkout or
the data mirror reruns nothing (dry runs after smoke)."""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from conftest import ROOT


def _status(work, env, config) -> Counter:
    """`sparsealign status`: rule → jobs that would run (empty when nothing would)."""
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "status", "--config", config],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "nothing to do" in proc.stdout:
        return Counter()
    counts = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+(\d+)$", proc.stdout, re.M)})
    del counts["total"], counts["all"]
    return counts


def _variant(work, name, change) -> str:
    config = yaml.safe_load((work / "config" / "smoke.yaml").read_text())
    change(config)
    (work / "config" / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return f"config/{name}.yaml"


@pytest.mark.e2e
@pytest.mark.parametrize("name, change, expected", [
    ("m16", lambda c: c["systems"]["toy"].update(hidden_sizes=[8, 16]),
     {"toy_model": 2, "train_sae": 2, "align_pair": 1, "toy_theory": 1, "summarise": 1,
      "report": 1}),
    # One forward pass extracts every layer: adding one re-extracts the network and redoes
    # what reads it (3 sweeps, 3 layers × 2 groups × 2 seeds SAEs, 3 layers × 2 groups).
    ("conv3", lambda c: c["systems"]["vgg16_hed"].update(layers=["conv1", "conv2", "conv3"]),
     {"extract": 1, "sae_sweep": 3, "train_sae": 3 * 2 * 2, "align_recording": 3 * 2,
      "summarise": 1, "report": 1}),
    # A third model shown the same stimuli changes no SAE's held-out stimuli; the layer's
    # pairs are one scoring job, now of 3 pairs.
    ("third_model", lambda c: (c["systems"].update(cowley_from_vgg19={
        **c["systems"]["cowley_direct_fit"], "model": "cowley_from_vgg19"}),
        c["experiments"]["dnn"]["systems"].append("cowley_from_vgg19")),
     {"extract": 1, "train_sae": 1, "align_pair": 1, "summarise": 1, "report": 1}),
    # A third session joins held-out group 0 (round robin): that group's SAEs retrain
    # without its images (2 layers × 2 seeds), and only its sessions are rescored (one
    # scoring job per layer and group).
    ("session", lambda c: c["systems"]["v4"].update(sessions=["210325", "190923", "210305"]),
     {"train_sae": 2 * 2, "align_recording": 2, "summarise": 1, "report": 1}),
])
def test_adding_to_the_config_runs_only_the_new_jobs(smoke_run, name, change, expected):
    work, env, _ = smoke_run
    assert _status(work, env, _variant(work, name, change)) == Counter(expected)


@pytest.mark.e2e
def test_moving_the_mirror_or_the_checkout_reruns_nothing(smoke_run, tmp_path):
    from sparsealign.provenance import path_md5

    work, env, _ = smoke_run
    mirror = tmp_path / "elsewhere" / "data"
    mirror.parent.mkdir()
    os.symlink(os.path.realpath(env["SPARSEALIGN_DATA_MIRROR"]), mirror)
    moved_mirror = {**env, "SPARSEALIGN_DATA_MIRROR": str(mirror)}
    assert _status(work, moved_mirror, "config/smoke.yaml") == Counter()
    before = path_md5(work / "data" / "raw")
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "run", "--config", "config/smoke.yaml",
                           "--cores", "1"], cwd=work, env=moved_mirror, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert path_md5(work / "data" / "raw") == before
    moved = tmp_path / "moved"
    shutil.copytree(work, moved, symlinks=True, ignore=shutil.ignore_patterns("mlruns"))
    assert _status(moved, env, "config/smoke.yaml") == Counter()


@pytest.mark.e2e
def test_a_wrong_mirror_is_refused_before_any_job_and_data_raw_stays(smoke_run, tmp_path):
    from sparsealign.provenance import path_md5

    work, env, _ = smoke_run
    before = path_md5(work / "data" / "raw")
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "run", "--config", "config/smoke.yaml",
                           "--cores", "1"], cwd=work, capture_output=True, text=True,
                          env={**env, "SPARSEALIGN_DATA_MIRROR": str(tmp_path / "nonexistent")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nonexistent' / 'SHA256SUMS'}: no such file; expected the data "
        "mirror's checksum list (data_mirror / SPARSEALIGN_DATA_MIRROR)"]
    assert path_md5(work / "data" / "raw") == before


@pytest.mark.e2e
def test_a_config_string_never_reaches_a_shell(tmp_path):
    from conftest import job_env, workdir

    work = workdir(tmp_path)
    text = (ROOT / "config" / "smoke.yaml").read_text()
    (work / "config" / "evil.yaml").write_text(text.replace("results-smoke", "x$(touch PWNED)"))
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "run", "--config", "config/evil.yaml"],
                          cwd=work, env=job_env(work), capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "config key results_dir" in proc.stderr
    assert not (work / "PWNED").exists() and not list(work.glob("x*"))
