"""Cowley et al. (2023) shared compact models of macaque V4, ported from Keras 3 to torch.

Each ``<family>_100filters.keras`` file of the data mirror holds a chain: a 5×5 conv and
four 5×5 separable convs (each followed by batch norm and, except in the linear family,
ReLU), a 1×1 "mixing" conv to 219 channels and a 28×28 depthwise "spatial pool" that
leaves one number per predicted V4 neuron. The torch port is
:mod:`sparsealign.networks.cowley`, imported only when a model is built.

Input: RGB 112×112 images in 0–255 minus the authors' per-channel means. Output: 219
predicted neurons, the V4 neurons of sessions 190923, 201025, 210225 and 211022.
"""

from __future__ import annotations

from sparsealign.models.registry import ModelSpec, register

RGB_MEANS = (116.222, 109.270, 100.381)
IMAGE_SIZE = 112
MODEL_DIR = "cowley2023_shared_compact_models"
FAMILIES = {
    "cowley_direct_fit": "from_V4data_direct_fit_100filters.keras",
    "cowley_from_cornets": "from_cornets_100filters.keras",
    "cowley_from_ensemble": "from_ensemble_model_100filters.keras",
    "cowley_from_resnet50": "from_resnet50_100filters.keras",
    "cowley_from_resnet50_robust": "from_resnet50_robust_100filters.keras",
    "cowley_from_vgg19": "from_vgg19_100filters.keras",
    "cowley_linear_from_ensemble": "linear_from_ensemble_model_100filters.keras",
}
"""Registry name → file in the mirror's ``cowley2023_shared_compact_models/``."""
OUTPUT_SESSIONS = {"190923": 33, "201025": 89, "210225": 55, "211022": 42}
"""Sessions whose neurons the 219 outputs predict, in output order, with neuron counts."""


def layers_of_family(name: str) -> dict[str, str]:
    """Friendly layer name → module path: the end of each conv block, mixing, output."""
    block_end = "bn" if name.startswith("cowley_linear") else "act"
    layers = {f"layer{i}": f"layer{i}_{block_end}" for i in range(5)}
    return layers | {"mixing": "mixing_stage", "output": "output_responses"}


def _build(name: str):
    from sparsealign.networks.cowley import build_family

    return build_family(name)


def _preprocess(images):
    from sparsealign.networks.cowley import preprocess

    return preprocess(images)


for _name, _filename in FAMILIES.items():
    register(ModelSpec(
        name=_name, build=lambda name=_name: _build(name), preprocess=_preprocess,
        layers=layers_of_family(_name), mirror_files=(f"{MODEL_DIR}/{_filename}",),
        description=f"Cowley et al. 2023 compact V4 model ({_filename}, data mirror)",
    ))
