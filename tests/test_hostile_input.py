"""Hostile input gives one ``error: …`` line naming the file, exit 2 and no partial output.

One test per row of docs/hostile_input.md; ``…`` in an expected message stands for text
that comes from a library (a decoder's wording, byte offsets).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsealign import schema
from sparsealign.errors import SparsealignError
from test_recordings_loaders import SHOWN, SPIKES, write_nwb

ROOT = Path(__file__).resolve().parents[1]
N_STIMULI = 20


def run_cli(*args, **env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARSEALIGN_TRACKING": "off", **env_vars}
    return subprocess.run([sys.executable, "-m", "sparsealign", *map(str, args)],
                          capture_output=True, text=True, env=env)


def assert_one_error_line(proc, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    pattern = ".*".join(map(re.escape, f"error: {expected}".split("…")))
    assert re.fullmatch(pattern, lines[0]), lines[0]


# --- stores: `check` and a stage command ------------------------------------------------
def good_store(path):
    values = np.random.default_rng(0).normal(size=(N_STIMULI, 3))
    ds = schema.make_store(values, [f"s{i:04d}" for i in range(N_STIMULI)],
                           [f"u/{i:05d}" for i in range(3)], source="t", layer="l", kind="neurons")
    return schema.save_store(ds, path)


def chunk_deleted(path, array="responses"):
    good_store(path)
    chunk = next(p for p in (path / array / "c").rglob("*") if p.is_file())
    chunk.unlink()


def chunk_truncated(path):
    good_store(path)
    chunk = next(p for p in (path / "responses" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:10])


def metadata_truncated(path):
    good_store(path)
    meta = path / "responses" / "zarr.json"
    meta.write_text(meta.read_text()[:30])


def written_behind_our_back(path, values, stimulus_ids, kind="neurons"):
    """A store that sparsealign would refuse to write, made with xarray directly."""
    import xarray as xr

    dims = schema.DIMS if values.ndim == 2 else schema.DIMS_WITH_REPEATS
    units = np.array([f"u/{i:05d}" for i in range(values.shape[1])], dtype=object)
    ds = xr.Dataset({"responses": (dims, values)}, coords={"stimulus": stimulus_ids, "unit": units},
                    attrs={**dict.fromkeys(schema.REQUIRED_ATTRS, "t"), "kind": kind})
    ds.to_zarr(path, zarr_format=3, consolidated=False)


def integer_ids(path):
    written_behind_our_back(path, np.ones((N_STIMULI, 3)), np.arange(N_STIMULI))


def nan_repeats(path):
    values = np.random.default_rng(0).normal(size=(N_STIMULI, 3, 2))
    values[3] = np.nan  # every repeat of s0003 is missing
    ids = np.array([f"s{i:04d}" for i in range(N_STIMULI)], dtype=object)
    written_behind_our_back(path, values, ids, kind="recording")


STORE_PROBES = {
    "responses chunk deleted": (
        chunk_deleted, "{path}: chunk files missing: responses (1 of 1); "
                       "expected a complete store (write or copy it again)"),
    "stimulus ids chunk deleted": (
        lambda path: chunk_deleted(path, "stimulus"),
        "{path}: chunk files missing: stimulus (1 of 1); "
        "expected a complete store (write or copy it again)"),
    "responses chunk truncated": (
        chunk_truncated, "{path}: not a readable Zarr store (RuntimeError: Zstd decompression "
                         "error: …); expected a Zarr v3 store"),
    "array metadata truncated": (
        metadata_truncated, "{path}: not a readable Zarr store (JSONDecodeError: …); "
                            "expected a Zarr v3 store"),
    "stimulus ids are integers": (
        integer_ids, "{path}: stimulus ids are int64, not strings; expected string ids on 'stimulus'"),
    "recording with NaN repeats": (
        nan_repeats, "{path}: 1 stimuli have NaN or infinite responses (ids: s0003); "
                     "expected finite values"),
}


@pytest.mark.parametrize("probe", STORE_PROBES)
def test_broken_store_is_one_line_from_check_and_from_a_stage(tmp_path, probe):
    build, message = STORE_PROBES[probe]
    path = tmp_path / "store.zarr"
    build(path)
    expected = message.format(path=path)

    proc = run_cli("check", ROOT / "config" / "smoke.yaml", path)
    assert_one_error_line(proc, expected)
    assert proc.stdout == ""

    out = tmp_path / "out"
    params = {"architecture": "topk", "n_latents": 8, "k": 2, "train_fraction": 0.8,
              "random_seed": 1}
    proc = run_cli("train-sae", "--activations", path, "--params", json.dumps(params),
                   "--sae-out", out / "sae.pt", "--random-out", out / "random.pt",
                   "--history-out", out / "history.json")
    assert_one_error_line(proc, expected)
    assert not out.exists()


# --- the data mirror's checksum list: a stage that reads the mirror ---------------------
SHAPE = "'<64 hex digits>  <relative path>' (sha256sum format)"
GOOD_LINE = f"{'0' * 64}  ./cowley2023_v4/README.txt\n"
CHECKSUM_PROBES = {
    "SHA256SUMS line with one field": (
        (GOOD_LINE + "not-a-checksum-line\n").encode(),
        "{sums}:2: malformed line 'not-a-checksum-line'; expected " + SHAPE),
    "SHA256SUMS digest not 64 hex digits": (
        (GOOD_LINE + "abc123  ./x.bin\n").encode(),
        "{sums}:2: malformed line 'abc123  ./x.bin'; expected " + SHAPE),
    "SHA256SUMS not UTF-8": (
        GOOD_LINE.encode() + b"\xff\xfe  ./x.bin\n",
        "{sums}:2: not UTF-8 text (invalid start byte); "
        "expected the mirror's checksum list (sha256sum format)"),
}


@pytest.mark.parametrize("probe", CHECKSUM_PROBES)
def test_malformed_checksum_list_is_one_line(tmp_path, probe):
    content, message = CHECKSUM_PROBES[probe]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "SHA256SUMS").write_bytes(content)
    out = tmp_path / "raw"
    proc = run_cli("import-dataset", "--dataset", "cowley2023_v4", "--out", out,
                   SPARSEALIGN_DATA_MIRROR=str(mirror))
    assert_one_error_line(proc, message.format(sums=mirror / "SHA256SUMS"))
    assert not out.exists()
    proc = run_cli("check", ROOT / "config" / "smoke.yaml", SPARSEALIGN_DATA_MIRROR=str(mirror))
    assert_one_error_line(proc, message.format(sums=mirror / "SHA256SUMS"))


# --- recording files: the stage that imports a recording system -------------------------
def test_nwb_without_the_named_column_is_one_line(tmp_path):
    path = write_nwb(tmp_path / "session.nwb", SPIKES, SHOWN)
    proc = run_cli("import-recording", "--params", json.dumps({"format": "nwb",
                   "stimulus_column": "image_id"}), "--path", path, "--out", tmp_path / "rec.zarr")
    assert_one_error_line(proc, (
        f"{path}: intervals table 'trials' has no column 'image_id' (columns: ['start_time', "
        "'stop_time', 'stimulus_id']); expected a column naming the stimulus of each presentation"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.nwb"]


def test_npz_ids_that_do_not_match_the_array_is_one_line(tmp_path):
    np.savez(tmp_path / "rec.npz", responses=np.ones((5, 30)))
    (tmp_path / "ids.txt").write_text("\n".join(f"s{i}" for i in range(30)))
    proc = run_cli("import-recording", "--params", json.dumps({"format": "npz"}),
                   "--path", tmp_path / "rec.npz", "--ids", tmp_path / "ids.txt",
                   "--out", tmp_path / "rec.zarr")
    assert_one_error_line(proc, f"{tmp_path / 'rec.npz'}: 30 stimulus ids for an array of shape "
                          "(5, 30) read as layout stimulus_unit (5 stimuli); expected one id per "
                          "stimulus; if the first axis holds units, set layout: unit_stimulus")
    assert not (tmp_path / "rec.zarr").exists()


def test_stores_written_by_sparsealign_pass_every_probe(tmp_path):
    path = good_store(tmp_path / "store.zarr")
    assert schema.open_store(path).sizes["stimulus"] == N_STIMULI
    shutil.rmtree(path)
