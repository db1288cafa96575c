"""The trainer: one loop over an iterator of batches, for every variant.

Device and precision come from the config (CPU fp32; CUDA with bf16 autocast). Nothing
in the hot loop reads a value back to the host: metrics accumulate in a device tensor and
are read every ``log_every`` steps; dead-latent counters stay on the device too. A
checkpoint holds everything the next step depends on (weights, optimiser, scheduler, RNG,
data cursor, dead-latent counters, metric accumulators, normalisation statistics), so a
killed run resumed from it ends with the same weights, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparsealign import eager_optim
from sparsealign.atomic import atomic_path
from sparsealign.errors import fail
from sparsealign.sae import metrics
from sparsealign.sae.config import SAEConfig
from sparsealign.sae.data import Prefetcher, as_source, iter_batches
from sparsealign.sae.variants import build_sae

CHECKPOINT_FORMAT = "sparsealign-sae-checkpoint/1"
#: Per-step statistics accumulated on the device, in this order.
STEP_KEYS = ("loss", "mse", "aux_loss", "sparsity_loss", "fvu", "explained_variance", "l0")
#: Rows used for the input-normalisation statistics.
NORM_SAMPLE_ROWS = 65_536


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise fail("sae.device", f"{name!r} requested but CUDA is not available", "auto or cpu")
    return torch.device(name)


def autocast_for(cfg: SAEConfig, device: torch.device):
    """bf16 autocast on CUDA (or when asked), nothing in fp32."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_factor(step: int, cfg: SAEConfig, total_steps: int) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last fraction of steps."""
    factor = 1.0
    if cfg.lr_warmup_steps:
        factor = min(factor, (step + 1) / cfg.lr_warmup_steps)
    decay_steps = int(total_steps * cfg.lr_decay_fraction)
    if decay_steps:
        factor = min(factor, (total_steps - step) / decay_steps)
    return factor


@dataclass
class TrainState:
    """Where a run is, beyond the module/optimiser/scheduler state dicts."""

    tokens_since_fired: torch.Tensor
    acc: torch.Tensor                 # sums of STEP_KEYS since the last history row
    norm_mean: torch.Tensor | None = None
    norm_scale: torch.Tensor | None = None
    step: int = 0
    tokens: int = 0
    epoch: int = 0
    batch: int = 0                    # batches done in the current epoch (the data cursor)
    count: int = 0                    # steps summed in ``acc``
    history: dict = field(default_factory=lambda: {k: [] for k in ("step", "tokens", "lr",
                                                                   *STEP_KEYS, "dead_fraction")})

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def train_sae(data, cfg: SAEConfig, *, init=None, log_fn=None, checkpoint=None,
              checkpoint_every: int = 1000, checkpoint_seconds: float | None = None,
              prefetch: int = 4):
    """Train an SAE; return ``(sae, history)``.

    Parameters
    ----------
    data : (n, d) float array, the path of an activations or training-rows store (read in
        chunks, so it may be larger than memory), or a source of :mod:`sparsealign.sae.data`
        (``StoreSource(path, rows=select_rows(...))`` trains on a subset of the rows).
    cfg : the run's settings.
    init : optional SAE from :func:`build_sae` with this config and input size to start
        from (a custom initialisation), trained in place; its biases are still reset from
        the first batch.
    log_fn : optional ``log_fn(step, row)`` called with each history row (every
        ``cfg.log_every`` steps and at the end), e.g. to log to MLflow in batches.
    checkpoint : optional file path. If it exists the run resumes from it (its config must
        match); it is rewritten atomically every ``checkpoint_every`` steps, after any step
        that ends ``checkpoint_seconds`` or more after the last write (so a kill loses at
        most that much work, however short the run), and at the end.
    prefetch : on CUDA, batches a thread prepares (pinned) ahead of the step. On CPU batches
        come straight from :func:`~sparsealign.sae.data.iter_batches`, whose reader thread
        already reads (and, for a store, shuffles) the next window ahead.

    Returns
    -------
    sae : the trained SAE on the training device, in eval mode; with
        ``cfg.normalize_input`` the normalisation is folded into its weights; with
        ``cfg.input_norm`` it normalises each input row itself (history metrics, e.g. the
        FVU, are in that normalised space).
    history : dict of equal-length lists (``step``, ``tokens``, ``lr``, ``loss``, ``mse``,
        ``aux_loss``, ``sparsity_loss``, ``fvu``, ``explained_variance``, ``l0``: means
        over the steps since the previous row; ``dead_fraction``: latents silent for
        ``cfg.dead_tokens`` tokens) plus ``history["final"]``, a summary dict (its
        ``seconds``, ``tokens_per_second`` and ``data_wait_seconds``, the time the loop
        waited for the next batch, vary from run to run).
    """
    source = as_source(data)
    device = resolve_device(cfg.device)
    if init is None:
        sae = build_sae(cfg, source.d)
    elif init.cfg != cfg or init.d_in != source.d:
        raise fail("train_sae(init=...)", f"an SAE for {init.d_in} inputs with another config",
                   f"an SAE built by build_sae(cfg, {source.d})")
    else:
        sae = init
    sae = sae.to(device)
    sae.train()
    opt = eager_optim.adamw(sae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=True)
    total = cfg.total_steps(source.n_rows)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, total))
    state = TrainState(tokens_since_fired=torch.zeros(cfg.n_latents, dtype=torch.long,
                                                      device=device),
                       acc=torch.zeros(len(STEP_KEYS), device=device))
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        _load_checkpoint(checkpoint, cfg, source, sae, opt, sched, state, device)
    elif cfg.normalize_input:
        sample = sae.prepare_input(torch.from_numpy(source.sample(NORM_SAMPLE_ROWS)))
        mean = sample.mean(0)
        scale = (sample - mean).pow(2).sum(1).mean().div(source.d).sqrt().clamp_min(1e-12)
        state.norm_mean, state.norm_scale = mean.float().to(device), scale.float().to(device)

    start_time, start_tokens, data_wait = time.perf_counter(), state.tokens, 0.0
    saved_at = start_time
    autocast = autocast_for(cfg, device)
    while state.epoch < cfg.epochs and state.step < total:
        batches = iter_batches(source, cfg.batch_size, cfg.shuffle_window_rows, cfg.seed,
                               state.epoch, state.batch)
        if device.type == "cpu":
            # A batch is a gather from memory (an array) or a slice of a window read and
            # shuffled ahead by iter_batches' reader thread (a store): a few microseconds on
            # the training thread, less than a prefetch thread's hand-offs and GIL switches.
            batches = _Inline(batches)
        else:
            batches = Prefetcher(batches, depth=prefetch, pin=device.type == "cuda")
        try:
            ready = time.perf_counter()
            for x in batches:
                data_wait += time.perf_counter() - ready
                _train_step(sae, opt, sched, state, x.to(device, non_blocking=True), cfg,
                            autocast)
                if state.step % cfg.log_every == 0:
                    _flush(state, sched, cfg, log_fn)
                if checkpoint and (state.step % checkpoint_every == 0 or (
                        checkpoint_seconds is not None
                        and time.perf_counter() - saved_at >= checkpoint_seconds)):
                    _save_checkpoint(checkpoint, cfg, source, sae, opt, sched, state)
                    saved_at = time.perf_counter()
                if state.step >= total:
                    break
                ready = time.perf_counter()
        finally:
            batches.close()
        state.epoch, state.batch = state.epoch + 1, 0
    if state.count:
        _flush(state, sched, cfg, log_fn)
    if checkpoint:
        _save_checkpoint(checkpoint, cfg, source, sae, opt, sched, state)

    seconds = time.perf_counter() - start_time
    history = state.history
    history["final"] = {
        "steps": state.step, "tokens": state.tokens, "seconds": seconds,
        "data_wait_seconds": data_wait,
        "tokens_per_second": (state.tokens - start_tokens) / max(seconds, 1e-9),
        **{k: history[k][-1] for k in ("fvu", "mse", "l0", "dead_fraction") if history[k]},
    }
    if state.norm_mean is not None:
        sae.fold_input_norm(state.norm_mean, state.norm_scale)
    return sae.eval(), history


def _train_step(sae, opt, sched, state: TrainState, x, cfg: SAEConfig, autocast) -> None:
    x = sae.prepare_input(x)       # input_norm (per row), then normalize_input (per dimension)
    if state.norm_mean is not None:
        x = (x - state.norm_mean) / state.norm_scale
    if state.step == 0:
        # Start at the data mean with centred pre-activations (what subtracting b_dec before
        # encoding does at init, as in SAELens/sparsify), so that the first top-k picks are
        # not all the latents that happen to align with the mean.
        with torch.no_grad():
            mean = x.mean(0)
            sae.b_dec.copy_(mean)
            sae.b_enc.copy_(-(sae.W_enc @ mean))
    with autocast:
        out = sae.training_step(x, state.tokens_since_fired >= cfg.dead_tokens)
    out.loss.backward()
    if sae.unit_norm_decoder:
        sae.project_decoder_grad()
    eager_optim.step(opt)
    sched.step()
    opt.zero_grad(set_to_none=True)
    if sae.unit_norm_decoder:
        sae.normalize_decoder()
    with torch.no_grad():
        state.tokens_since_fired = torch.where(out.fired, 0, state.tokens_since_fired + len(x))
        fvu, explained = metrics.fvu_and_explained_variance(x, out.x_hat.float())
        state.acc += torch.stack([out.loss.detach(), out.terms["mse"], out.terms["aux_loss"],
                                  out.terms["sparsity_loss"], fvu, explained,
                                  out.l0]).float()
    state.step += 1
    state.tokens += len(x)
    state.batch += 1
    state.count += 1


class _Inline:
    """A batch generator consumed on the training thread, with :class:`Prefetcher`'s face."""

    def __init__(self, batches):
        self._batches = batches

    def __iter__(self):
        for batch in self._batches:
            yield torch.from_numpy(batch)

    def close(self):
        self._batches.close()


def _flush(state: TrainState, sched, cfg: SAEConfig, log_fn) -> None:
    """Read the accumulated metrics back (the one host sync) and append a history row."""
    dead = (state.tokens_since_fired >= cfg.dead_tokens).float().mean()
    *means, dead = torch.cat([state.acc / state.count, dead[None]]).tolist()
    row = {"step": state.step, "tokens": state.tokens,
           "lr": sched.get_last_lr()[0], **dict(zip(STEP_KEYS, means)), "dead_fraction": dead}
    for key, value in row.items():
        state.history[key].append(value)
    state.acc.zero_()
    state.count = 0
    if log_fn is not None:
        log_fn(state.step, row)


def _comparable(cfg_dict: dict) -> dict:
    # The device never changes a number on CPU and a resumed run may move machines.
    return {k: v for k, v in cfg_dict.items() if k != "device"}


def _rows_digest(source) -> str | None:
    """SHA-256 of the row subset a source uses; None when it uses every row."""
    rows = getattr(source, "rows", None)
    return None if rows is None else hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()


def _save_checkpoint(path: Path, cfg, source, sae, opt, sched, state: TrainState) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "d_in": source.d,
        "n_rows": source.n_rows, "rows": _rows_digest(source), "model": sae.state_dict(),
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "state": state.to_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, cfg, source, sae, opt, sched, state: TrainState, device):
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a broken file
        raise fail(path, f"unreadable checkpoint ({type(exc).__name__}: {exc})",
                   "a checkpoint written by sparsealign.sae.train_sae") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise fail(path, "not a sparsealign SAE checkpoint", CHECKPOINT_FORMAT)
    if _comparable(payload["config"]) != _comparable(cfg.to_dict()):
        changed = sorted(k for k, v in _comparable(cfg.to_dict()).items()
                         if payload["config"].get(k) != v)
        raise fail(path, f"checkpoint was written with different settings ({changed})",
                   "the same SAE config to resume, or a new checkpoint path")
    if (payload["d_in"], payload["n_rows"]) != (source.d, source.n_rows):
        raise fail(path, f"checkpoint is for data of shape ({payload['n_rows']}, "
                         f"{payload['d_in']}), got ({source.n_rows}, {source.d})",
                   "the same activations to resume")
    if payload.get("rows") != _rows_digest(source):
        raise fail(path, "checkpoint is for another subset of the rows",
                   "the same rows to resume")
    sae.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"]["torch"].cpu())
    if payload["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
    for key, value in payload["state"].items():
        setattr(state, key, value)
