"""Encode an activations store through a trained (or random) SAE into a latents store."""

from __future__ import annotations

import numpy as np

from sparsealign import schema
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


def encode_store(sae, activations, stimulus_ids, *, kind: str, config: dict, batch_size: int = 8192):
    """Latents of ``stimulus_ids`` as a store: units ``latent/00000`` …, same attrs contract."""
    from sparsealign.sae import encode_array

    subset = activations.sel(stimulus=np.asarray(stimulus_ids))
    latents = encode_array(sae, schema.responses(subset).astype(np.float32), batch_size=batch_size)
    unit_ids = [f"latent/{i:05d}" for i in range(latents.shape[1])]
    return schema.make_store(latents, subset["stimulus"].values, unit_ids,
                             source=activations.attrs["source"], layer=activations.attrs["layer"],
                             kind=kind, config=config)
