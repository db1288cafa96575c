"""Reconstruction quality of a trained SAE on held-out rows, streamed in batches.

SAE settings are chosen by these numbers on rows the SAE never trained on (FVU, L0, dead
fraction; see SCIENCE.md), never by an alignment score. With ``input_norm`` the SAE
reconstructs the normalised input, so the FVU is measured in that space.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsealign.sae.data import as_source


def evaluate_sae(sae, data, rows: np.ndarray | None = None, batch_size: int = 8192) -> dict:
    """FVU, L0 and dead fraction of ``sae`` on the rows of ``data``, in fp32.

    Parameters
    ----------
    sae : a trained SAE (:func:`~sparsealign.sae.train_sae` or
        :func:`~sparsealign.sae.load_sae`), used on its device.
    data : (n, d) array, the path of an activations or rows store, or a source of
        :mod:`sparsealign.sae.data`; read block by block, so it may exceed memory.
    rows : sorted row indices to evaluate on (e.g. ``select_rows(path,
        only_images=held_out)``); None = all. Not with a source (give it to the source).
    batch_size : rows encoded at once.

    Returns
    -------
    dict
        ``fvu``: Σ‖x − x̂‖² / Σ‖x − x̄‖² over all rows (x̄ their mean, x the prepared input:
        :meth:`prepare_input`); ``l0``: mean non-zero latents per row; ``dead_fraction``:
        fraction of latents zero on every row; ``n_rows``.
    """
    source = as_source(data, rows=rows)
    device = sae.W_enc.device
    n, sse, active = 0, 0.0, 0
    mean = torch.zeros(source.d, dtype=torch.float64, device=device)
    m2 = torch.zeros(source.d, dtype=torch.float64, device=device)   # Σ (x − x̄)² per unit
    fired = torch.zeros(sae.cfg.n_latents, dtype=torch.bool, device=device)
    with torch.inference_mode():
        for block_start, block_stop in source.blocks:
            for start in range(block_start, block_stop, batch_size):
                stop = min(block_stop, start + batch_size)
                batch = source.read(start, stop)
                source.check(batch, start)
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                z = sae.encode(x)
                target = sae.prepare_input(x).double()
                sse += float((sae.decode(z).double() - target).pow(2).sum())
                active += int((z != 0).sum())
                fired |= (z != 0).any(dim=0)
                # Chan et al.'s pairwise merge of (count, mean, M2): stable in one pass.
                b = len(x)
                b_mean = target.mean(0)
                delta = b_mean - mean
                m2 += (target - b_mean).pow(2).sum(0) + delta.pow(2) * (n * b / (n + b))
                mean += delta * (b / (n + b))
                n += b
    return {"fvu": sse / float(m2.sum()), "l0": active / n,
            "dead_fraction": 1.0 - float(fired.float().mean()), "n_rows": n}
