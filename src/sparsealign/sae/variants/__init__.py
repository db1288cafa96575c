"""SAE variants, one module each, behind a name → class registry.

Every variant shares one inference form (:class:`~sparsealign.sae.variants.base.SAE`):
``pre = x W_encᵀ + b_enc``, then either the top k of ``ReLU(pre)`` or ``pre`` kept where it
exceeds a per-latent threshold ≥ 0, and a linear decoder ``ẑ W_dec + b_dec``. Variants
differ only in how they train.
"""

from __future__ import annotations

import torch

from sparsealign.errors import fail

VARIANTS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a variant to :data:`VARIANTS` under ``name``."""
    def add(cls):
        cls.name = name
        VARIANTS[name] = cls
        return cls
    return add


def build_sae(cfg, d_in: int):
    """A freshly initialised SAE for ``d_in``-dimensional inputs, seeded by ``cfg.seed``.

    Untrained, it is the "random SAE" control of the same width and k.
    """
    if isinstance(d_in, bool) or not isinstance(d_in, int) or d_in < 1:
        raise fail("sae input", f"d_in={d_in!r}", "a positive number of input units")
    generator = torch.Generator().manual_seed(cfg.seed)
    return VARIANTS[cfg.architecture](cfg, d_in, generator)


from sparsealign.sae.variants import batchtopk, jumprelu, relu, topk  # noqa: E402,F401  (registers)
