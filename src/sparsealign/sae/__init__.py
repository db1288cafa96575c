"""Sparse autoencoders trained on cached activations.

>>> from sparsealign.sae import SAEConfig, train_sae, encode_array, save_sae, load_sae
>>> sae, history = train_sae(activations, SAEConfig(architecture="topk", n_latents=64, k=7))

Modules: :mod:`~.config` (settings), :mod:`~.variants` (one module per architecture, a
registry), :mod:`~.train` (the trainer), :mod:`~.data` (batches from arrays and Zarr
stores), :mod:`~.kernels` (sparse encoder/decoder paths), :mod:`~.metrics`,
:mod:`~.evaluate` (held-out FVU, L0, dead fraction), :mod:`~.io` (save/load),
:mod:`~.export` (latent stores).
"""

from sparsealign.sae.config import SAEConfig
from sparsealign.sae.evaluate import evaluate_sae
from sparsealign.sae.export import encode_array, encode_to_store, read_latents
from sparsealign.sae.io import load_sae, save_sae
from sparsealign.sae.train import train_sae
from sparsealign.sae.variants import VARIANTS, build_sae

__all__ = ["SAEConfig", "VARIANTS", "build_sae", "train_sae", "encode_array", "save_sae",
           "load_sae", "encode_to_store", "read_latents", "evaluate_sae"]
