"""The model registry: every built-in model is found by name; mistakes are named errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from sparsealign.errors import SparsealignError
from sparsealign.models import ModelSpec, get_model, list_models, register
from sparsealign.models.cowley import FAMILIES


def test_builtin_models_are_registered_with_their_layers():
    assert {"vgg16_hed", *FAMILIES} <= set(list_models())
    assert list(get_model("vgg16_hed").layers) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert get_model("cowley_direct_fit").layers["layer4"] == "layer4_act"
    assert get_model("cowley_linear_from_ensemble").layers["layer4"] == "layer4_bn"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(SparsealignError, match=r"model 'nope': not registered; expected one of"):
        get_model("nope")


def test_a_second_model_under_one_name_is_an_error():
    spec = ModelSpec("test_registry_twice", build=lambda: None, preprocess=lambda x: x)
    assert register(spec) is spec and register(spec) is spec
    with pytest.raises(SparsealignError, match="registered twice"):
        register(ModelSpec("test_registry_twice", build=lambda: None, preprocess=lambda x: x))


def _spec_module(tmp_path, monkeypatch, body):
    (tmp_path / "lab_nets.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_model_from_module_function_outside_the_package(tmp_path, monkeypatch):
    _spec_module(tmp_path, monkeypatch, "from sparsealign.models import ModelSpec\n"
                 "def build():\n    return ModelSpec('lab', build=lambda: None, preprocess=lambda x: x,"
                 " layers={'fc': 'fc'})\n"
                 "def wrong():\n    return 42\n")
    assert get_model("lab_nets:build").layers == {"fc": "fc"}
    with pytest.raises(SparsealignError, match=r"model 'lab_nets:wrong': gave a int; expected a sparsealign"):
        get_model("lab_nets:wrong")
    with pytest.raises(SparsealignError, match=r"lab_nets has no 'nope'"):
        get_model("lab_nets:nope")
    with pytest.raises(SparsealignError, match=r"cannot import no_such_module"):
        get_model("no_such_module:build")


def test_a_model_from_an_entry_point(monkeypatch):
    from sparsealign.models import registry

    class EntryPoint:
        value = "lab_package.nets:spec"

        def load(self):
            return ModelSpec("plugin_net", build=lambda: None, preprocess=lambda x: x)

    monkeypatch.setattr(registry, "_entry_points", lambda: {"plugin_net": EntryPoint()})
    assert get_model("plugin_net").name == "plugin_net"
    assert "plugin_net" in list_models()


def test_listing_models_and_checking_a_config_import_neither_torch_nor_scipy():
    """Every Snakefile parse lists the models' mirror files and validates the config: the
    built-in spec modules import torch only to build a network, the config check knows the
    metrics by name without importing them (scipy)."""
    code = ("import sys\n"
            "from sparsealign.config import load_config\n"
            "from sparsealign.models import list_models, mirror_files\n"
            "list_models()\n"
            "assert mirror_files('cowley_from_vgg19')\n"
            "load_config('config/config.yaml')\n"
            "heavy = sorted({'torch', 'scipy'} & set(sys.modules))\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
