"""Saving and loading trained SAEs: one file holding config, weights and metadata.

The config travels with the weights, so a loaded SAE encodes as the trained one did
(``input_norm`` included); a file written before a config field existed loads with that
field's default.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sparsealign.atomic import atomic_path
from sparsealign.errors import fail
from sparsealign.sae.config import SAEConfig
from sparsealign.sae.variants import build_sae

SAE_FORMAT = "sparsealign-sae/1"


def save_sae(sae, path, meta: dict | None = None) -> Path:
    """Write ``sae`` (config, weights on CPU, JSON-able ``meta``) to ``path`` atomically."""
    path = Path(path)
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except TypeError as exc:
        raise fail(path, f"SAE metadata is not JSON-serialisable ({exc})",
                   "a dict of strings, numbers, lists and dicts") from None
    payload = {"format": SAE_FORMAT, "config": sae.cfg.to_dict(), "d_in": sae.d_in,
               "state": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
               "meta": meta_json}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_sae(path):
    """Load an SAE written by :func:`save_sae`: on CPU, in eval mode, with ``.cfg``, ``.meta``."""
    path = Path(path)
    if not path.exists():
        raise fail(path, "no such file", "an SAE written by sparsealign.sae.save_sae")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a broken file
        raise fail(path, f"unreadable SAE file ({type(exc).__name__}: {exc})",
                   "an SAE written by sparsealign.sae.save_sae") from None
    if not isinstance(payload, dict) or payload.get("format") != SAE_FORMAT:
        raise fail(path, "not a sparsealign SAE file", SAE_FORMAT)
    sae = build_sae(SAEConfig.from_dict(payload["config"]), payload["d_in"])
    sae.load_state_dict(payload["state"])
    sae.meta = json.loads(payload["meta"])
    return sae.eval()
