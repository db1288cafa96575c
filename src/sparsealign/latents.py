"""Encode an activations store through a trained (or random) SAE into a latents store."""

from __future__ import annotations

import numpy as np

from sparsealign.errors import fail


def training_split(stimulus_ids, train_fraction: float):
    """First ``train_fraction`` of stimuli (store order) train the SAE; the rest evaluate.

    With ``train_fraction == 1`` the SAE sees every stimulus and latents are exported
    for all of them (cross-validation then happens inside the alignment metrics).
    """
    ids = np.asarray(stimulus_ids)
    if train_fraction >= 1:
        return ids, ids
    n_train = int(round(train_fraction * ids.size))
    if n_train < 1 or n_train >= ids.size:
        raise fail("sae.train_fraction", f"{train_fraction} leaves {n_train} of {ids.size} "
                   "stimuli for training", "both splits non-empty")
    return ids[:n_train], ids[n_train:]


def encode_store(sae, activations, stimulus_ids, out, *, kind: str, config: dict,
                 sparse: bool = False, batch_size: int = 8192):
    """Write the latents of ``stimulus_ids`` to ``out``: units ``latent/00000`` …, dense or
    top-k sparse (``indices``/``values``); :func:`sparsealign.schema.open_store` reads
    either as the same dense Dataset."""
    from sparsealign.sae import encode_to_store

    subset = activations.sel(stimulus=np.asarray(stimulus_ids))
    return encode_to_store(sae, subset, out, sparse, kind=kind, config=config, batch_size=batch_size)
