"""The config model: stimuli, systems and experiments as data, strictly validated."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsealign.config import load_config, validate_config
from sparsealign.errors import SparsealignError
from sparsealign.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(ROOT / "config" / name)
    assert {"toy", "v4", "dnn"} <= set(config["experiments"])
    assert config["experiments"]["toy"]["sae"]["architecture"] == "topk"


def test_defaults_are_the_paper_protocol():
    config = load_config(ROOT / "config" / "config.yaml")
    toy = config["systems"]["toy"]
    assert toy["hidden_sizes"] == [8, 16, 32] and toy["steps"] == 10_000
    assert config["stimuli"]["toy_features"]["n_features"] == 64
    sae = config["experiments"]["toy"]["sae"]
    assert sae["n_latents"] == 64 and sae["k"] == 7 and sae["train_fraction"] == 0.8


def test_the_default_plan_is_the_paper_grid():
    plan = Plan(load_config(ROOT / "config" / "config.yaml"))
    assert len(plan.comparisons["toy"]) == 9  # 3 sizes × 3 seed pairs
    assert all(c.a.labels["pair"] == c.b.labels["pair"] and c.a.labels["seed"] % 2 == 0
               for c in plan.comparisons["toy"])
    assert len(plan.comparisons["dnn"]) == 21 * 2  # 7 models: 21 pairs, at 2 layers
    assert len(plan.comparisons["v4"]) == 5 * 11  # 5 layers × every session of the mirror
    assert {c.group for c in plan.comparisons["v4"]} == {0, 1}  # two held-out groups
    assert len(plan.comparisons["v4_size"]) == 4 * 11  # 4 fractions × 11 sessions at conv5
    assert len(plan.comparisons["cross"]) == 4
    # Scoring jobs: one per layer of the 21 DNN pairs, per toy seed pair, per explicit
    # pair; one per layer and held-out group of sessions (each group's sessions scored
    # together, with that group's SAEs).
    assert [len(j.comparisons) for j in plan.jobs["dnn"]] == [21, 21]
    assert len(plan.jobs["toy"]) == 9 and len(plan.jobs["cross"]) == 4
    assert len(plan.jobs["v4"]) == 5 * 2 and len(plan.jobs["v4_size"]) == 4 * 2
    for job in plan.jobs["v4"]:
        assert len({(c.a, c.group, c.fraction) for c in job.comparisons}) == 1
    assert sorted(c.b.name for j in plan.jobs["v4"] if j.comparisons[0].a.name == "conv5"
                  for c in j.comparisons) == sorted(m.name for m in plan.members["v4"])


def test_the_paper_config_scores_every_session_at_full_scale():
    plan = Plan(load_config(ROOT / "config" / "paper.yaml"))
    assert len(plan.members["v4"]) == 11
    assert {c.group for c in plan.comparisons["v4"]} == set(range(11))  # one per session
    assert plan.config["systems"]["vgg16_hed"]["training_rows"]["positions"] is None


def test_every_sae_holds_out_the_stimuli_it_is_scored_on():
    plan = Plan(load_config(ROOT / "config" / "config.yaml"))
    for name in ("v4", "dnn", "cross"):
        for c in plan.comparisons[name]:
            for m, other in ((c.a, c.b), (c.b, c.a)):
                if m.rows:  # the partner's stimuli (one member per stimulus set) are held out
                    held = plan.heldout_members(name, m, c.group)
                    assert plan.stimuli_signature(other) in [plan.stimuli_signature(x) for x in held]
    # Sweeps are shared by experiments with the same SAE settings, per layer.
    conv5 = plan.member("vgg16_hed", "conv5")
    assert plan.sweep_file("v4", conv5) == plan.sweep_file("v4_size", conv5)


def _with(change):
    config = copy.deepcopy(DEFAULT)
    change(config)
    return config


def test_a_large_group_of_pairs_is_split_into_jobs_of_at_most_32():
    from sparsealign.plan import MAX_COMPARISONS_PER_JOB

    config = load_config(ROOT / "config" / "config.yaml")
    config["systems"]["toy"].update(hidden_sizes=[8], seed_pairs=5)   # 10 models
    config["experiments"]["toy"]["match"] = ["hidden"]                # 45 pairs
    jobs = Plan(config).jobs["toy"]
    assert [j.key for j in jobs] == ["pairs--hidden8.part1", "pairs--hidden8.part2"]
    assert [len(j.comparisons) for j in jobs] == [MAX_COMPARISONS_PER_JOB, 45 - MAX_COMPARISONS_PER_JOB]


@pytest.mark.parametrize("change, where", [
    (lambda c: c["systems"]["toy"].update(hidden_sizes="8"), "systems.toy.hidden_sizes"),
    (lambda c: c["experiments"]["toy"]["sae"].update(k=0), "experiments.toy.sae.k"),
    (lambda c: c["experiments"]["toy"]["sae"].update(n_latent=16), "experiments.toy.sae"),
    (lambda c: c["experiments"]["toy"]["sae"].update(k=65), "experiments.toy.sae.k"),
    (lambda c: c["experiments"]["toy"]["alignment"].update(metrics=["nope"]),
     "experiments.toy.alignment.metrics.0"),
    (lambda c: c["systems"]["vgg16_hed"].update(stimuli="missing"), "systems.vgg16_hed.stimuli"),
    (lambda c: c["experiments"]["v4"].update(targets=["vgg16_hed"]), "experiments.v4.targets.0"),
    (lambda c: c["systems"]["v4"].update(kind="recordings"), "systems.v4.kind"),
    (lambda c: c["stimuli"]["v4_images"].update(extra=1), "stimuli.v4_images"),
    (lambda c: c.update(results_dir="x$(touch PWNED)"), "results_dir"),
    (lambda c: c.update(results_dir="a b"), "results_dir"),
    (lambda c: c.update(results_dir="x;rm"), "results_dir"),
    (lambda c: c["systems"].update({"my net": c["systems"]["toy"]}), "systems"),
    (lambda c: c.update(toyy={}), "(top level)"),
])
def test_bad_config_is_one_line_naming_file_and_key(change, where):
    with pytest.raises(SparsealignError) as info:
        validate_config(_with(change), "config/bad.yaml")
    message = str(info.value)
    assert message.startswith(f"config/bad.yaml: config key {where}:") and "\n" not in message


def test_unreadable_or_empty_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text("toy: [unclosed")
    with pytest.raises(SparsealignError, match="c.yaml: not valid YAML"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(SparsealignError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(SparsealignError, match="empty.yaml: empty config"):
        load_config(tmp_path / "empty.yaml")


def test_input_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "stimuli": {"imgs": {"kind": "image_folder", "path": "images"}},
        "systems": {"net": {"kind": "network", "model": "vgg16_hed", "layers": ["conv1"],
                            "stimuli": "imgs"},
                    "rec": {"kind": "recording", "path": "rec.npz", "format": "npz", "ids": "ids.txt"}},
        "experiments": {"e": {"kind": "to_recordings", "sources": ["net"], "targets": ["rec"]}}}))
    monkeypatch.chdir(tmp_path)
    config = load_config("study/c.yaml")
    assert config["stimuli"]["imgs"]["path"] == "study/images"
    assert config["systems"]["rec"]["ids"] == "study/ids.txt"


def _check(tmp_path, text):
    (tmp_path / "c.yaml").write_text(text)
    return subprocess.run([sys.executable, "-m", "sparsealign", "check", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("text, expected", [
    ("", "empty config"),
    (yaml.safe_dump(_with(lambda c: c["experiments"]["dnn"].update(
        sae={**c["experiments"]["dnn"]["sae"], "n_latent": 16}))),
     "config key experiments.dnn.sae: unknown key ('n_latent' was unexpected)"),
    (yaml.safe_dump(_with(lambda c: c["experiments"]["toy"]["sae"].update(k=99))),
     "config key experiments.toy.sae.k: k = 99 exceeds n_latents = 64; expected k ≤ n_latents"),
])
def test_check_is_one_line_exit_2(tmp_path, text, expected):
    proc = _check(tmp_path, text)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'c.yaml'}")
    assert expected in lines[0]
