"""The command line as a user meets it: one clear error line, non-zero exit, no partial output."""

import json
import subprocess
import sys

import numpy as np

from sparsealign import schema


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparsealign", *args], capture_output=True,
                          text=True, cwd=cwd, env={"SPARSEALIGN_TRACKING": "off", "PATH": ""})


def _store(path, values, prefix="s", kind="neurons"):
    ids = [f"{prefix}{i:04d}" for i in range(values.shape[0])]
    units = [f"u/{i:05d}" for i in range(values.shape[1])]
    schema.save_store(schema.make_store(values, ids, units, source="t", layer="l", kind=kind), path)
    return str(path)


def test_align_pair_with_mismatched_stimuli_fails_cleanly(tmp_path, rng):
    a = [_store(tmp_path / f"a{i}.zarr", rng.normal(size=(40, 4))) for i in range(3)]
    b = [_store(tmp_path / "b0.zarr", rng.normal(size=(40, 4)), prefix="other")] + a[1:]
    out = tmp_path / "scores.csv"
    params = json.dumps({"metrics": ["semi_matching"], "n_folds": 2, "seed": 0, "options": {}})
    flags = [f"--{side}-{kind}={path}" for side, paths in (("a", a), ("b", b))
             for kind, path in zip(("neurons", "sae", "random"), paths)]
    proc = _run("align-pair", *flags, "--params", params, "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "b0.zarr" in lines[0] and "shared stimuli" in lines[0]
    assert not out.exists()


def test_one_scoring_job_scores_several_recordings_into_one_table(tmp_path, rng):
    """The workflow's align_recording job: a layer against each session of a held-out
    group (``--targets``), one table whose rows carry each session's labels; mixing
    ``--targets`` with the single-recording flags is one error line."""
    import pandas as pd

    x = rng.normal(size=(60, 6))
    source = {"neurons": _store(tmp_path / "n.zarr", x),
              "sae": [_store(tmp_path / "s.zarr", np.maximum(x @ rng.normal(size=(6, 8)), 0))],
              "random": [_store(tmp_path / "r.zarr", np.maximum(x @ rng.normal(size=(6, 8)), 0))]}
    targets = []
    for session, rows in (("one", slice(0, 30)), ("two", slice(30, 60))):
        ids = [f"s{i:04d}" for i in range(60)][rows]
        y = x[rows] @ rng.normal(size=(6, 3))
        path = tmp_path / f"{session}.zarr"
        schema.save_store(schema.make_store(y, ids, ["n0", "n1", "n2"], source="t", layer="l",
                                            kind="recording"), path)
        targets.append({"source": source, "recording": str(path), "target_label": "V4",
                        "labels": {"session": session}, "name": f"v4.{session}"})
    params = json.dumps({"metrics": ["ridge"], "n_folds": 3, "n_boot": 20})
    out = tmp_path / "scores.csv"
    proc = _run("align-recording", "--targets", json.dumps(targets), "--params", params,
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert sorted(table["session"].unique()) == ["one", "two"]
    assert set(table["n_stimuli"]) == {30}
    assert {"Neuron→V4", "SAE→V4", "RandomSAE→V4"} <= set(table["comparison"])
    proc = _run("align-recording", "--targets", json.dumps(targets), "--recording",
                targets[0]["recording"], "--params", params, "--out", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --targets: given with --recording; expected one or the other"]
    proc = _run("align-pair", "--params", params, "--out", str(tmp_path / "y.csv"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: align-pair: --a-neurons, --a-sae, --a-random, --b-neurons, --b-sae, --b-random"
        " missing; expected them, or --pairs"]
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


def test_nan_store_is_one_line_naming_the_store(tmp_path, rng):
    import xarray as xr

    path = tmp_path / "nan.zarr"
    _store(path, rng.normal(size=(30, 3)))
    ds = xr.open_zarr(path, consolidated=False).load()
    ds["responses"][2, 1] = np.nan
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)  # corrupt it behind our back
    params = json.dumps({"architecture": "topk", "n_latents": 8, "k": 2, "train_fraction": 0.8,
                         "random_seed": 1})
    proc = _run("train-sae", "--activations", str(path), "--params", params, "--sae-out",
                str(tmp_path / "s.pt"), "--random-out", str(tmp_path / "r.pt"),
                "--history-out", str(tmp_path / "h.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: 1 stimuli have NaN or infinite responses (ids: s0002); expected finite values"]
    assert not any((tmp_path / name).exists() for name in ("s.pt", "r.pt", "h.json"))


def test_wrong_dims_store_is_rejected(tmp_path):
    import xarray as xr

    path = tmp_path / "wrong.zarr"
    xr.Dataset({"responses": (("neuron", "image"), np.ones((3, 5)))},
               attrs=dict.fromkeys(schema.REQUIRED_ATTRS, "neurons")).to_zarr(
        path, zarr_format=3, consolidated=False)
    proc = _run("latents", "--activations", str(path), "--sae", "x.pt", "--encoder", "sae",
                "--params", "{}", "--out", str(tmp_path / "z.zarr"))
    assert proc.returncode == 2
    assert "'responses' has dims ('neuron', 'image')" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_check_accepts_good_and_rejects_bad_config(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert _run("check", str(root / "config" / "smoke.yaml")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text((root / "config" / "smoke.yaml").read_text().replace("seed_pairs: 1", "seed_pairs: 0"))
    proc = _run("check", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {bad}: config key systems.toy.seed_pairs: 0 is less than "
                                   "the minimum of 1; expected a config matching config.schema.yaml")


def test_every_subcommand_has_help(capsys):
    import pytest

    from sparsealign.cli import COMMANDS, STAGES, build_parser

    for name in [*STAGES, *COMMANDS]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: sparsealign {name}" in capsys.readouterr().out


def test_check_reports_every_missing_mirror_file_and_bad_store(tmp_path, rng):
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    real = Path(os.environ.get("SPARSEALIGN_DATA_MIRROR", root.parent / "shared" / "data"))
    (mirror / "SHA256SUMS").write_text((real / "SHA256SUMS").read_text())
    bad_store = tmp_path / "bad.zarr"
    bad_store.mkdir()
    proc = subprocess.run([sys.executable, "-m", "sparsealign", "check", str(root / "config" / "smoke.yaml"),
                           str(bad_store)], capture_output=True, text=True,
                          env={**os.environ, "SPARSEALIGN_TRACKING": "off", "SPARSEALIGN_DATA_MIRROR": str(mirror)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    # smoke needs two compact models and the whole V4 dataset (its import converts every
    # session: the session table, 11 image zips, 11 response files, 1 file of raw trials),
    # plus the bad store
    from sparsealign.config import load_config
    from sparsealign.plan import mirror_files

    needed = mirror_files(load_config(root / "config" / "smoke.yaml"))
    assert len(needed) == 2 + 1 + 11 + 11 + 1
    assert len(lines) == len(needed) + 1 and all(line.startswith("error: ") for line in lines)
    assert sum("missing from the data mirror" in line for line in lines) == len(needed)
    assert "bad.zarr" in lines[-1]
