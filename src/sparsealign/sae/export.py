"""Encoding activations through a trained SAE: to arrays, and to latent stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sparsealign.errors import fail


def _check_input(sae, x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != sae.d_in:
        shape = getattr(x, "shape", type(x).__name__)
        raise fail(name, f"activations of shape {shape}", f"an (n, {sae.d_in}) array")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise fail(name, f"{int(bad.sum())} rows have NaN or infinite activations "
                         f"(rows: {np.flatnonzero(bad)[:5].tolist()})", "finite values")
    return x


def _batches(sae, x: np.ndarray, batch_size: int):
    """Yield (start, float32 code tensor on CPU) for consecutive row batches, in fp32."""
    device = sae.W_enc.device
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(np.asarray(x[start:start + batch_size], dtype=np.float32))
            yield start, sae.encode(chunk.to(device)).float().cpu()


def encode_array(sae, x: np.ndarray, batch_size: int = 8192, name: str = "<activations>"):
    """Latent codes of ``x``: (n, d_in) → float32 (n, n_latents), in fp32 on the SAE's device."""
    x = _check_input(sae, x, name)
    out = np.empty((x.shape[0], sae.cfg.n_latents), dtype=np.float32)
    for start, z in _batches(sae, x, batch_size):
        out[start:start + len(z)] = z.numpy()
    return out


#: attrs value marking a store written as top-k (indices, values) pairs.


def encode_to_store(sae, activations, out_path, sparse: bool, *, kind: str = "sae_latents",
                    config: dict | str = "", batch_size: int = 8192):
    """Encode an activation store through ``sae`` into a latents store at ``out_path``.

    Parameters
    ----------
    activations : an activations Dataset (``schema.open_store``) or its path; read in
        stimulus chunks of ``batch_size``.
    sparse : write each row's active latents as ``indices``/``values`` of shape
        (stimulus, slot), ``slot`` as wide as the densest row (k for TopK), padded with
        index -1; else the dense ``responses``. :func:`read_latents` returns the same
        Dataset for both.
    kind : ``sae_latents`` or ``random_sae_latents``.
    config : the config slice hashed into ``config_sha``.

    Units are ``latent/00000`` …; ``source`` and ``layer`` come from the activations. The
    write is atomic.
    """
    import xarray as xr

    from sparsealign import provenance, schema

    ds = activations if not isinstance(activations, (str, Path)) else schema.open_store(activations)
    name = str(activations) if isinstance(activations, (str, Path)) else "<activations>"
    resp = ds["responses"]
    if resp.dims != schema.DIMS or resp.shape[1] != sae.d_in:
        raise fail(name, f"responses of dims {resp.dims} and shape {resp.shape}",
                   f"('stimulus', 'unit') with {sae.d_in} units")
    unit_ids = [f"latent/{i:05d}" for i in range(sae.cfg.n_latents)]
    attrs = dict(source=ds.attrs["source"], layer=ds.attrs["layer"], kind=kind)
    codes = _encode_chunks(sae, resp, batch_size, name)
    if not sparse:
        z = np.concatenate([z.numpy() for z in codes])
        store = schema.make_store(z, ds["stimulus"].values, unit_ids, config=config, **attrs)
        return schema.save_store(store, out_path)
    entries = [_top_entries(z) for z in codes]
    width = max(i.shape[1] for i, _ in entries)
    indices = np.concatenate([_pad(i, width, -1) for i, _ in entries])
    values = np.concatenate([_pad(v, width, 0) for _, v in entries])
    attrs.update(created_by=provenance.created_by(), latent_storage=schema.SPARSE_STORAGE,
                 config_sha=config if isinstance(config, str) else provenance.config_sha(config))
    out = xr.Dataset({"indices": (("stimulus", "slot"), indices),
                      "values": (("stimulus", "slot"), values)},
                     coords={"stimulus": ds["stimulus"].values.astype(object).astype(str),
                             "unit": np.asarray(unit_ids)}, attrs=attrs)
    return _write_atomic(out, Path(out_path))


def _encode_chunks(sae, resp, batch_size: int, name: str):
    """Codes of the store's rows, ``batch_size`` stimuli at a time (float32 CPU tensors)."""
    for start in range(0, resp.shape[0], batch_size):
        x = _check_input(sae, np.asarray(resp[start:start + batch_size].values), name)
        for _, z in _batches(sae, x, batch_size):
            yield z


def _top_entries(z: torch.Tensor):
    """(indices, values) of each row's non-zero entries, indices ascending, padded with -1."""
    width = max(1, int((z != 0).sum(dim=1).max()))
    values, indices = z.topk(width, dim=1)
    indices = torch.where(values != 0, indices, z.shape[1])   # padding sorts last
    indices, order = indices.sort(dim=1)
    values = values.gather(1, order)
    indices = torch.where(indices == z.shape[1], -1, indices)
    dtype = torch.int16 if z.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    return indices.to(dtype).numpy(), values.numpy()


def _pad(a: np.ndarray, width: int, fill) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)


def _write_atomic(ds, path: Path) -> Path:
    from sparsealign.schema import write_atomic

    rows = max(1, min(ds.sizes["stimulus"], 2**22 // max(1, ds.sizes["slot"])))
    encoding = {v: {"chunks": (rows, ds.sizes["slot"])} for v in ("indices", "values")}
    return write_atomic(ds, path, encoding)


def read_latents(path):
    """A latents store as the dense, validated Dataset, whether it was written dense or sparse."""
    from sparsealign import schema

    return schema.open_store(path)
