"""The settings of one SAE training run.

Field names are the keys of the pipeline config's ``sae`` block, one to one; the text
under each field is its documentation. Everything here can change a trained SAE (the
shuffle window included, since it fixes the data order); nothing here is about where
a job runs, except ``device``, which never changes a number on CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sparsealign.errors import fail

#: Values of :attr:`SAEConfig.input_norm`.
INPUT_NORMS = ("none", "layernorm")


@dataclass
class SAEConfig:
    architecture: str = "topk"
    """Variant: ``relu`` (ReLU + L1 weighted by decoder norms), ``topk``, ``batchtopk``
    (top k·batch over the batch, learned inference threshold) or ``jumprelu``."""

    n_latents: int = 64
    """Dictionary size (number of SAE latents)."""

    k: int = 7
    """Active latents per sample for ``topk``; mean active latents per sample for
    ``batchtopk``. Checked against ``n_latents`` for every variant."""

    aux_k_coef: float = 0.1
    """Weight of the AuxK loss: dead latents reconstruct the residual ``x - x̂``. 0 = off."""

    aux_k: int | None = None
    """Latents used by AuxK per sample; None = ``d_in // 2`` (Gao et al. 2024)."""

    dead_tokens: int = 100_000
    """A latent is dead once it has not fired for this many training tokens (rows);
    the window of the logged ``dead_fraction`` and the set AuxK revives."""

    l1_coef: float = 0.02
    """``relu`` only: weight of Σ_i |z_i|·‖W_dec,i‖, relative to the per-element MSE. The
    penalty grows with the input norm: tune it per layer (or use ``normalize_input``)."""

    l0_coef: float = 0.01
    """``jumprelu`` only: weight of the (straight-through) L0 count, relative to the
    per-element MSE."""

    jumprelu_bandwidth: float = 0.1
    """``jumprelu`` only: width ε of the rectangle kernel of the threshold's pseudo-gradient,
    in units of the pre-activations (whose spread is about 0.6 × the input's per-dimension
    standard deviation at initialisation)."""

    jumprelu_init_threshold: float = 0.3
    """``jumprelu`` only: initial threshold of every latent (same units)."""

    threshold_momentum: float = 0.99
    """``batchtopk`` only: EMA momentum (bias-corrected) of the inference threshold, the
    smallest activation kept by each training batch."""

    normalize_input: bool = False
    """Centre the activations and scale them to unit mean squared norm per dimension while
    training (statistics from a fixed sample); folded back into the weights afterwards, so
    the returned SAE takes raw activations (with ``input_norm``, it LN-normalises them
    itself first)."""

    input_norm: str = "none"
    """Per-sample input normalisation, part of the SAE (applied whenever it encodes, also
    after loading): ``none``, or ``layernorm`` (each input row z-scored across its units:
    ``(x - mean) / sqrt(var + 1e-5)``, as the paper does for DNN activations). Reconstructions
    and their FVU are then in the normalised space. Applied before ``normalize_input``."""

    lr: float = 1e-3
    """AdamW learning rate."""

    weight_decay: float = 0.0
    """AdamW weight decay."""

    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""

    lr_decay_fraction: float = 0.0
    """Linear decay to 0 over this final fraction of the steps (0 = constant)."""

    batch_size: int = 1024
    """Rows per optimiser step."""

    epochs: int = 1
    """Passes over the data, each shuffled with (seed, epoch)."""

    max_steps: int | None = None
    """Stop after this many optimiser steps, mid-epoch if need be (None: every epoch). A
    fixed step budget makes SAEs trained on different amounts of data cost the same."""

    seed: int = 0
    """Seeds the initialisation and the data order."""

    shuffle_window_rows: int = 262_144
    """Activation stores only: rows held in memory for the shuffle across chunks (memory
    ≈ rows × d × 4 B). In-memory arrays are shuffled whole."""

    decoder_impl: str = "auto"
    """TopK family: ``sparse`` (gather / embedding-bag decoder and encoder gradient, never
    a dense batch × latents product in the backward pass), ``dense``, or ``auto`` (on CPU
    sparse when k ≤ n_latents / 8 and n_latents ≥ 512, below which the dense products are
    cheaper than the sparse kernels' fixed costs; on CUDA always dense, the faster there).
    Both give the same SAE up to floating point."""

    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``."""

    log_every: int = 50
    """Steps between history rows; metrics stay on the device in between."""

    def __post_init__(self):
        from sparsealign.sae.variants import VARIANTS

        if self.architecture not in VARIANTS:
            raise fail("sae.architecture", f"unknown variant {self.architecture!r}",
                       f"one of {sorted(VARIANTS)}")
        positive = ("n_latents", "k", "dead_tokens", "batch_size", "epochs", "log_every",
                    "shuffle_window_rows")
        if self.max_steps is not None:
            positive += ("max_steps",)
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(f"sae.{name}", f"{value!r}", "a positive integer")
        if self.k > self.n_latents:
            raise fail("sae.k", f"k={self.k} exceeds n_latents={self.n_latents}",
                       "1 <= k <= n_latents")
        if self.aux_k is not None and not 1 <= self.aux_k:
            raise fail("sae.aux_k", f"{self.aux_k!r}", "a positive integer or null")
        for name in ("aux_k_coef", "l1_coef", "l0_coef", "weight_decay", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise fail(f"sae.{name}", f"{getattr(self, name)!r}", "a value >= 0")
        for name in ("lr", "jumprelu_bandwidth", "jumprelu_init_threshold"):
            if not getattr(self, name) > 0:
                raise fail(f"sae.{name}", f"{getattr(self, name)!r}", "a value > 0")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise fail("sae.lr_decay_fraction", f"{self.lr_decay_fraction!r}", "0 <= value <= 1")
        if not 0 <= self.threshold_momentum < 1:
            raise fail("sae.threshold_momentum", f"{self.threshold_momentum!r}", "0 <= value < 1")
        choices = {"decoder_impl": ("auto", "sparse", "dense"),
                   "input_norm": INPUT_NORMS,
                   "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise fail(f"sae.{name}", f"{getattr(self, name)!r}", f"one of {allowed}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise fail("sae.device", f"{self.device!r}", "auto, cpu, cuda or cuda:N")

    @classmethod
    def from_dict(cls, values: dict) -> SAEConfig:
        """Build from a config slice; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise fail("sae", f"unknown keys {unknown}", f"keys among {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def trains_on_cuda(self) -> bool:
        """Whether training runs on CUDA: ``device`` names it, or is ``auto`` where CUDA is
        available (no check that it is: the trainer does that)."""
        import torch

        return self.device.startswith("cuda") or (
            self.device == "auto" and torch.cuda.is_available())

    def total_steps(self, n_rows: int) -> int:
        """Optimiser steps of a run on ``n_rows`` rows: every epoch, capped at ``max_steps``."""
        from sparsealign.sae.data import n_batches

        steps = n_batches(n_rows, self.batch_size) * self.epochs
        return steps if self.max_steps is None else min(steps, self.max_steps)
