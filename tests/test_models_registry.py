"""The model registry: every built-in model is found by name; mistakes are named errors."""

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
