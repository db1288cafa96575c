from pathlib import Path

import pytest

from sparsealign.config import load_config, validate_config
from sparsealign.errors import SparsealignError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(ROOT / "config" / name)
    assert config["toy"]["sae"]["architecture"] == "topk"
    assert config["toy"]["alignment"]["n_folds"] >= 2


def test_defaults_are_the_paper_protocol():
    toy = validate_config({})["toy"]
    assert toy["hidden_sizes"] == [8, 16, 32] and toy["n_features"] == 64
    assert toy["steps"] == 10_000 and toy["batch_size"] == 1024
    assert toy["sae"]["n_latents"] == 64 and toy["sae"]["k"] == 7


@pytest.mark.parametrize("bad, where", [
    ({"toy": {"hidden_sizes": "8"}}, "toy.hidden_sizes"),
    ({"toy": {"sae": {"k": 0}}}, "toy.sae.k"),
    ({"toy": {"alignment": {"metrics": ["nope"]}}}, "toy.alignment.metrics.0"),
    ({"toyy": {}}, "(top level)"),
])
def test_bad_config_is_one_line_naming_file_and_key(bad, where):
    with pytest.raises(SparsealignError) as info:
        validate_config(bad, "config/bad.yaml")
    message = str(info.value)
    assert message.startswith(f"config/bad.yaml: config key {where}:") and "\n" not in message


def test_unreadable_config_file(tmp_path):
    (tmp_path / "c.yaml").write_text("toy: [unclosed")
    with pytest.raises(SparsealignError, match="c.yaml: not valid YAML"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(SparsealignError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
