"""The same TopK SAE trained by sparsealign, SAELens and sparsify on the same cached activations.

    python benchmarks/bench_sae.py                      # both sizes, CPU, 1 thread
    python benchmarks/bench_sae.py --device cuda --sizes 768x12288x32x2048 --steps 500

Each (library, size) runs in its own process under ``--python`` (an environment holding
torch, sae-lens and eai-sparsify; sparsealign is imported from this checkout's ``src``),
so peak memory is per run ("training MiB": the peak above the process after imports and
data loading), and ``--repeats`` alternates the order of the runs so that a shared,
loaded machine penalises no library in particular. Every library gets the same rows, the
same optimiser (Adam; sparsealign's AdamW has no weight decay), learning rate (no warm-up),
batch size and steps, no AuxK (the dead-latent window is longer than the run), and the FVU
of each trained SAE is computed the same way on the same held-out rows. sparsify's
``Trainer`` needs a Hugging Face model, so its per-step work (bias init, decoder
renormalisation, forward, FVU loss, gradient projection, Adam step, fired-latent
bookkeeping) is replayed here with its own ``SparseCoder``; SAELens runs its own
``SAETrainer`` on an iterator of batches with its default TopK settings (its
``use_sparse_activations`` option fails in the backward pass on CPU with torch 2.13).

Activations are synthetic, cached as .npy under ``--cache``: sparse codes over 8·d unit
directions with Zipf-distributed frequencies (about 40 active per row), exponential
magnitudes and 5 % Gaussian noise — the statistics SAEs are built for, with no model to
download.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
LIBRARIES = ("sparsealign", "sae-lens", "sparsify")
EVAL_ROWS = 8192
WARMUP_STEPS = 2


def make_activations(n: int, d: int, seed: int) -> np.ndarray:
    import scipy.sparse

    rng = np.random.default_rng(seed)
    n_features = 8 * d
    directions = rng.normal(size=(n_features, d)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    freq = 1.0 / np.arange(1, n_features + 1) ** 0.8
    per_row = rng.poisson(40, size=n)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.choice(n_features, size=rows.size, p=freq / freq.sum())
    vals = rng.exponential(size=rows.size).astype(np.float32)
    codes = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n, n_features))
    x = np.asarray(codes @ directions, dtype=np.float32)
    x += 0.05 * x.std() * rng.normal(size=x.shape).astype(np.float32)
    return x


def cached_activations(cache: Path, n: int, d: int) -> Path:
    path = cache / f"acts_{n}x{d}.npy"
    if not path.exists():
        from sparsealign.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, make_activations(n, d, seed=0))
    return path


# ---- one (library, size) run, in its own process ----------------------------------------

def toy_activations(n: int, d: int = 32, n_features: int = 64, p: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The toy study's statistics without training a toy model: ``n_features`` sparse
    features (active with probability ``p``, U[0, 1] when active) through a random
    Xavier-normal ReLU layer to ``d`` units. Returns ``(features, activations)``, float32."""
    import torch

    from sparsealign.models.toy import sample_features

    generator = torch.Generator().manual_seed(seed)
    features = sample_features(generator, n, n_features, p)
    weights = torch.randn(n_features, d, generator=generator) * (2 / (n_features + d)) ** 0.5
    return features.numpy(), torch.relu(features @ weights).numpy()


def sae_config(x, spec):
    """sparsealign's config for a spec (AuxK on when ``spec["aux"]``, else off)."""
    from sparsealign.sae import SAEConfig

    aux = spec.get("aux", False)
    return SAEConfig(architecture="topk", n_latents=spec["latents"], k=spec["k"],
                     batch_size=spec["batch"], lr=spec["lr"], seed=0, device=spec["device"],
                     decoder_impl=spec.get("decoder_impl", "auto"),
                     aux_k_coef=0.1 if aux else 0.0,
                     dead_tokens=spec.get("dead_tokens", 100_000) if aux else 10**12,
                     log_every=spec.get("log_every", 10**9),
                     shuffle_window_rows=spec.get("shuffle_window_rows", 262_144))


def train_sparsealign(x, spec):
    """``x`` an array, or the path of a rows/activations store (the streamed path)."""
    from sparsealign.sae import train_sae

    sae, _ = train_sae(x, sae_config(x, spec))
    reconstruct = lambda h: sae(h)  # noqa: E731
    reconstruct.encode = sae.encode
    return reconstruct


def train_reference(x, spec):
    """The minimal plain-torch TopK loop doing sparsealign's work, with the same AuxK term:
    tied initialisation (unit decoder rows, encoder = 3^-1/2 × decoder), biases from the first
    batch, a shuffled pass over the rows, dense top-k code, unit-norm decoder with the
    gradient projected off its rows, fused Adam, and the dead-latent counter AuxK reads.
    ``spec["init"] = "plain"``: independent random encoder rows and zero biases instead."""
    import torch

    device, k, n_latents, batch = spec["device"], spec["k"], spec["latents"], spec["batch"]
    aux_coef = 0.1 if spec.get("aux", False) else 0.0
    dead_tokens = spec.get("dead_tokens", 100_000)
    x = torch.from_numpy(np.ascontiguousarray(x))
    d = x.shape[1]
    generator = torch.Generator().manual_seed(0)
    tied = spec.get("init", "tied") == "tied"
    w_dec = torch.randn(n_latents, d, generator=generator)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    if tied:
        w_enc = w_dec * 3 ** -0.5
    else:   # independent rows, PyTorch's default Linear scale; biases stay at 0
        w_enc = torch.randn(n_latents, d, generator=generator)
        w_enc *= 3 ** -0.5 / w_enc.norm(dim=1, keepdim=True)
    w_enc = w_enc.to(device).requires_grad_()
    w_dec = w_dec.to(device).requires_grad_()
    b_enc = torch.zeros(n_latents, device=device, requires_grad=True)
    b_dec = torch.zeros(d, device=device, requires_grad=True)
    opt = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=spec["lr"], fused=True)
    since_fired = torch.zeros(n_latents, dtype=torch.long, device=device)
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch):
        h = x[order[start:start + batch]].to(device)
        if start == 0 and tied:
            with torch.no_grad():
                b_dec.copy_(h.mean(0))
                b_enc.copy_(-(w_enc @ b_dec))
        pre = h @ w_enc.T + b_enc
        values, indices = pre.topk(k, dim=1, sorted=False)
        z = torch.zeros_like(pre).scatter(1, indices, values.relu())
        x_hat = z @ w_dec + b_dec
        loss = (x_hat - h).pow(2).mean()
        dead = since_fired >= dead_tokens
        if aux_coef and bool(dead.any()):
            masked = pre.detach().masked_fill(~dead, float("-inf"))
            aux_idx = masked.topk(min(d // 2, n_latents), dim=1, sorted=False).indices
            aux_val = pre.gather(1, aux_idx).relu() * dead[aux_idx]
            e_hat = torch.zeros_like(pre).scatter(1, aux_idx, aux_val) @ w_dec
            loss = loss + aux_coef * (e_hat - (h - x_hat).detach()).pow(2).mean()
        loss.backward()
        with torch.no_grad():
            w_dec.grad -= (w_dec.grad * w_dec).sum(1, keepdim=True) * w_dec
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=1, keepdim=True)
            fired = torch.zeros(n_latents, dtype=torch.bool, device=device)
            fired[indices[values > 0]] = True
            since_fired = torch.where(fired, 0, since_fired + len(h))

    def encode(h):
        pre = h @ w_enc.T + b_enc
        values, indices = pre.topk(k, dim=1)
        return torch.zeros_like(pre).scatter(1, indices, values.relu())

    def reconstruct(h):
        return encode(h) @ w_dec + b_dec
    reconstruct.encode = encode
    return reconstruct


def train_sae_lens(x, spec):
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=x.shape[1], d_sae=spec["latents"], k=spec["k"], device=spec["device"],
        dtype="float32"))
    batch = spec["batch"]
    cfg = SAETrainerConfig(total_training_samples=len(x) // batch * batch,
                           train_batch_size_samples=batch, lr=spec["lr"], lr_end=spec["lr"],
                           device=spec["device"], autocast=spec["device"].startswith("cuda"),
                           dead_feature_window=10**12,
                           logger=LoggingConfig(log_to_wandb=False))
    batches = (torch.from_numpy(x[i:i + batch]).to(spec["device"])
               for i in range(0, len(x), batch))
    os.environ["TQDM_DISABLE"] = "1"
    SAETrainer(cfg=cfg, sae=sae, data_provider=batches).fit()
    return lambda h: sae(h)


def train_sparsify(x, spec):
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    device = spec["device"]
    sae = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=spec["latents"], k=spec["k"]),
                      device=device)
    opt = torch.optim.Adam(sae.parameters(), lr=spec["lr"])
    tokens_since_fired = torch.zeros(sae.num_latents, dtype=torch.long, device=device)
    batch, total_fvu = spec["batch"], 0.0
    for step, start in enumerate(range(0, len(x), batch)):
        h = torch.from_numpy(x[start:start + batch]).to(device)
        if step == 0:
            sae.b_dec.data = h.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            out = sae(h)   # bf16 on CUDA, as sparsealign and SAELens run there
        did_fire = torch.zeros(sae.num_latents, dtype=torch.bool, device=device)
        did_fire[out.latent_indices.flatten()] = True
        total_fvu += float(out.fvu.detach())
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            tokens_since_fired += len(h)
            tokens_since_fired[did_fire] = 0
    return lambda h: sae(h).sae_out


TRAINERS = {"sparsealign": train_sparsealign, "sae-lens": train_sae_lens,
            "sparsify": train_sparsify, "reference": train_reference}
MODULES = {"sparsealign": "sparsealign.sae", "sae-lens": "sae_lens", "sparsify": "sparsify",
           "reference": "torch"}


def held_out_fvu(reconstruct, held_out, device="cpu") -> float:
    """FVU of a trained SAE on held-out rows, computed the same way for every library."""
    import torch

    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(held_out, dtype=np.float32)).to(device)
        x_hat = torch.cat([reconstruct(h[i:i + 1024]).float() for i in range(0, len(h), 1024)])
        return ((x_hat - h).pow(2).sum() / (h - h.mean(0)).pow(2).sum()).item()


def time_in_process(data, spec, names, repeats=3, rows=None):
    """Train each of ``names`` on ``data`` ``repeats`` times, in alternating order, in this
    process; return ``{name: {"steps_per_s": best, "each": [...], "steps_per_cpu_s": best,
    "each_cpu": [...], "reconstruct": ...}}``. ``*_cpu`` count the process's CPU seconds
    (all its threads) instead of wall seconds: on a shared, loaded machine they measure the
    work done, where wall time also measures the neighbours.

    ``data`` is an array or a store path; ``rows`` is its number of rows (needed for a
    path). One short run of each first pays the first-call costs, untimed.
    """
    rows = len(data) if rows is None else rows
    steps = -(-rows // spec["batch"])
    warm = data[:WARMUP_STEPS * spec["batch"]] if isinstance(data, np.ndarray) else None
    out = {name: {"each": [], "each_cpu": []} for name in names}
    for name in names:
        if warm is not None:
            TRAINERS[name](warm, spec)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            out[name]["reconstruct"] = TRAINERS[name](data, spec)
            out[name]["each_cpu"].append(steps / (time.process_time() - start_cpu))
            out[name]["each"].append(steps / (time.perf_counter() - start))
    for result in out.values():
        result["steps_per_s"] = max(result["each"])
        result["steps_per_cpu_s"] = max(result["each_cpu"])
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(lib: str, spec: dict) -> dict:
    import importlib

    import torch

    sys.path.insert(0, str(REPO_SRC))
    importlib.import_module(MODULES[lib])
    torch.set_num_threads(spec["threads"])
    data = np.load(spec["data"])
    held_out, x = data[:EVAL_ROWS], data[EVAL_ROWS:]
    rss_before = peak_rss_mib()                         # imports and data, before training
    train = TRAINERS[lib]
    train(x[:WARMUP_STEPS * spec["batch"]], spec)       # first-call costs, not timed
    if spec["device"].startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, start_cpu = time.perf_counter(), time.process_time()
    reconstruct = train(x, spec)
    if spec["device"].startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu
    fvu = held_out_fvu(reconstruct, held_out, spec["device"])
    result = {"library": lib, "rows": len(x), "seconds": seconds,
              "activations_per_s": len(x) / seconds,
              "activations_per_cpu_s": len(x) / cpu_seconds, "fvu": fvu,
              "peak_rss_mib": peak_rss_mib(), "rss_growth_mib": peak_rss_mib() - rss_before}
    if spec["device"].startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# ---- rows for benchmarks/run.py ---------------------------------------------------------------

TOY = {"d": 32, "latents": 64, "k": 7, "batch": 1024, "lr": 1e-3, "device": "cpu", "aux": True}
DNN = {"d": 512, "latents": 4096, "k": 32, "batch": 1024, "lr": 1e-3, "device": "cpu"}


def _latents(reconstruct, x) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reconstruct.encode(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def toy_rows(quick: bool) -> list:
    """Toy shapes, 1 thread: sparsealign vs the plain loop (speed, AuxK on), then the quality
    of both at equal steps (held-out FVU, ground-truth MCC), and of a plain initialisation."""
    import torch

    from common import Row
    from sparsealign.align import feature_recovery

    torch.set_num_threads(1)
    steps, repeats, rows = (150, 3, []) if quick else (600, 3, [])
    shape = "d=32 L=64 k=7 b=1024 1 thread"
    features, x = toy_activations(EVAL_ROWS + steps * TOY["batch"])
    held, train = x[:EVAL_ROWS], x[EVAL_ROWS:]
    timing = time_in_process(train, TOY, ["sparsealign", "reference"], repeats)
    ours, ref = timing["sparsealign"], timing["reference"]
    rows.append(Row("SAE toy", f"steps per CPU s, {shape}, AuxK on (toy data: none dies)",
                    ours["steps_per_cpu_s"], "steps/s", "plain torch loop",
                    ref["steps_per_cpu_s"], goal=">= 0.9", note="wall steps/s, each run: " +
                    " / ".join(f"{a:.0f} vs {b:.0f}" for a, b in zip(ours["each"], ref["each"]))))
    # AuxK doing work: 8 features, 64 latents, a 10-batch dead window (a few % dead).
    _, x8 = toy_activations(steps * TOY["batch"], n_features=8, p=0.5, seed=1)
    spec8 = {**TOY, "dead_tokens": 10 * TOY["batch"]}
    timing8 = time_in_process(x8, spec8, ["sparsealign", "reference"], repeats)
    rows.append(Row("SAE toy", f"steps per CPU s, {shape}, AuxK active (a few % dead)",
                    timing8["sparsealign"]["steps_per_cpu_s"], "steps/s", "plain torch loop",
                    timing8["reference"]["steps_per_cpu_s"], goal=">= 0.9",
                    note=f"wall steps/s, best: {timing8['sparsealign']['steps_per_s']:.0f} vs "
                         f"{timing8['reference']['steps_per_s']:.0f}"))
    # Quality at equal steps: the runs above, plus the plain loop with a plain initialisation.
    plain = train_reference(train, {**TOY, "init": "plain"})
    quality = {}
    for name, rec in (("sparsealign", ours["reconstruct"]), ("plain loop", ref["reconstruct"]),
                      ("plain loop, plain init", plain)):
        quality[name] = (held_out_fvu(rec, held),
                         feature_recovery(features[:EVAL_ROWS], _latents(rec, held))["mcc"])
    (fvu, mcc), (fvu_ref, mcc_ref) = quality["sparsealign"], quality["plain loop"]
    fvu_plain, mcc_plain = quality["plain loop, plain init"]
    rows.append(Row("SAE toy", f"held-out FVU after {steps} steps (ratio: theirs/ours)", fvu,
                    "", "plain torch loop", fvu_ref, ratio=fvu_ref / fvu, goal=">= 0.99",
                    note=f"plain loop with independent encoder init and zero biases: "
                         f"FVU {fvu_plain:.4f}"))
    rows.append(Row("SAE toy", f"ground-truth MCC after {steps} steps (64 features)", mcc, "",
                    "plain torch loop", mcc_ref, goal=">= 0.99",
                    note=f"plain init: MCC {mcc_plain:.4f}; sparsealign already ties the "
                         "encoder to the decoder and starts b_dec at the batch mean"))
    return rows


def dnn_rows(quick: bool, python: str) -> list:
    """DNN shapes, 1 thread: achieved GFLOP/s against the encoder's sgemm in this process,
    then sparsealign against SAELens and sparsify (workers under ``python``)."""
    import torch

    from common import Row, unavailable

    torch.set_num_threads(1)
    steps = 8 if quick else 30
    shape = "d=512 L=4096 k=32 b=1024 1 thread"
    data = cached_activations(Path("/tmp/sparsealign-bench"), EVAL_ROWS + steps * DNN["batch"],
                              DNN["d"])
    x = np.load(data)[EVAL_ROWS:]
    gemm = [sgemm_gflops(DNN["batch"], DNN["d"], DNN["latents"])]
    timing = time_in_process(x, DNN, ["sparsealign"], repeats=2)
    gemm.append(sgemm_gflops(DNN["batch"], DNN["d"], DNN["latents"]))
    flops = useful_flops_per_step(DNN["batch"], DNN["d"], DNN["latents"], DNN["k"])
    achieved = timing["sparsealign"]["steps_per_cpu_s"] * flops / 1e9
    rows = [Row("SAE DNN", f"GFLOP/s of useful work, {shape}", achieved, "GFLOP/s",
                "sgemm of the encoder's shape", max(gemm), goal=">= 0.7",
                note=f"{timing['sparsealign']['steps_per_cpu_s']:.2f} steps per CPU s (wall "
                     f"{timing['sparsealign']['steps_per_s']:.2f}/s); sgemm before/after "
                     f"{gemm[0]:.1f}/{gemm[1]:.1f}")]
    spec = {**DNN, "threads": 1, "data": str(data)}
    runs = compare_libraries(spec, list(LIBRARIES), python, repeats=2)
    ours = runs["sparsealign"]
    for lib, goal in (("sae-lens", ">= 3.5"), ("sparsify", ">= 1.5")):
        figure = f"activations per CPU s vs {lib}, {shape}, {steps} steps"
        if isinstance(ours, str) or isinstance(runs[lib], str):
            why = ours if isinstance(ours, str) else runs[lib]
            rows.append(unavailable("SAE DNN", figure, f"{lib} under {python}: {why}", goal))
            continue
        key = "activations_per_cpu_s"
        a, b = max(ours, key=lambda r: r[key]), max(runs[lib], key=lambda r: r[key])
        rows.append(Row("SAE DNN", figure, a[key], "act/CPU s", lib, b[key], goal=goal,
                        note=f"held-out FVU {a['fvu']:.4f} vs {b['fvu']:.4f} "
                             f"({100 * (a['fvu'] / b['fvu'] - 1):+.1f} %); wall act/s "
                             f"{a['activations_per_s']:.0f} vs {b['activations_per_s']:.0f}"))
    return rows


def write_rows_store(path: Path, x: np.ndarray, chunk_rows: int) -> Path:
    """``x`` as a training-rows store (the layout of :mod:`sparsealign.extract`'s rows
    stores: ``responses`` (row, unit), float16, zstd, ``chunk_rows`` rows a chunk)."""
    import shutil

    import zarr

    if path.exists():
        shutil.rmtree(path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array("responses", shape=x.shape, chunks=(chunk_rows, x.shape[1]),
                       dtype="float16", dimension_names=("row", "unit"))[:] = x
    return path


def streamed_rows(quick: bool) -> list:
    """Training from a rows store several shuffle windows long vs the same rows in memory."""
    import tempfile

    import torch

    from common import Row

    torch.set_num_threads(1)
    rows = []
    cases = (("toy", TOY, 150 if quick else 600, 16384),
             ("DNN", DNN, 12 if quick else 48, 2048))
    with tempfile.TemporaryDirectory(prefix="sparsealign-bench-") as tmp:
        for name, base, steps, chunk in cases:
            n = steps * base["batch"]
            x = make_activations(n, base["d"], seed=2) if name == "DNN" else \
                toy_activations(n, seed=2)[1]
            x = x.astype(np.float16).astype(np.float32)     # the store's values exactly
            store = write_rows_store(Path(tmp) / f"{name}.rows.zarr", x, chunk)
            window = max(chunk, n // 4)
            spec = {**base, "shuffle_window_rows": window}
            mem = time_in_process(x, spec, ["sparsealign"], repeats=2)["sparsealign"]
            TRAINERS["sparsealign"](str(store), {**spec, "batch": base["batch"]})  # warm
            streamed = time_in_process(str(store), spec, ["sparsealign"], repeats=2,
                                       rows=n)["sparsealign"]
            rows.append(Row("SAE streamed", f"steps/s from a Zarr rows store, {name} shape "
                            f"(d={base['d']}, {n} rows = {n // window} windows, float16)",
                            streamed["steps_per_s"], "steps/s", "same rows in memory",
                            mem["steps_per_s"], goal=">= 0.9"))
    return rows


# ---- driver ---------------------------------------------------------------------------------

def compare_libraries(spec: dict, libraries, python: str, repeats: int) -> dict:
    """Run each library's worker ``repeats`` times (alternating order) under ``python``;
    ``{library: [result dicts]}``, or ``{library: "why it failed"}`` for one that never ran."""
    runs: dict = {lib: [] for lib in libraries}
    errors: dict = {}
    for repeat in range(repeats):
        for lib in libraries if repeat % 2 == 0 else libraries[::-1]:
            if lib in errors:
                continue
            proc = subprocess.run([python, __file__, "--worker", lib, json.dumps(spec)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                errors[lib] = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
                continue
            runs[lib].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {lib: done if done else errors.get(lib, "no run") for lib, done in runs.items()}


def sgemm_gflops(batch: int, d: int, latents: int, seconds: float = 1.0) -> float:
    """Best single-call GFLOP/s of the encoder's product (batch × d)·(d × latents) in fp32 on
    the current torch thread setting, over about ``seconds``."""
    import torch

    x, w = torch.randn(batch, d), torch.randn(latents, d)
    out = torch.empty(batch, latents)
    torch.mm(x, w.T, out=out)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(x, w.T, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * batch * d * latents / best / 1e9


def useful_flops_per_step(batch: int, d: int, latents: int, k: int) -> float:
    """The TopK step's necessary products: the dense encoder forward (2·b·d·L) and the three
    sparse ones (decoder forward, decoder and encoder weight gradients: 3 × 2·b·k·d)."""
    return 2 * batch * d * (latents + 3 * k)

def parse_size(text: str) -> dict:
    d, latents, k, batch = (int(v) for v in text.lower().split("x"))
    return {"d": d, "latents": latents, "k": k, "batch": batch}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512x4096x32x1024,768x12288x32x2048",
                        help="comma-separated d x latents x k x batch")
    parser.add_argument("--steps", default="60,24",
                        help="timed optimiser steps per size (one value for all, or one each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per library, in alternating order; the fastest is reported "
                             "(the FVU is the same in every run)")
    parser.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable),
                        help="interpreter with torch, sae-lens and eai-sparsify installed")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sparsealign-bench"))
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker[0], json.loads(args.worker[1]))))
        return

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    steps = steps * len(sizes) if len(steps) == 1 else steps
    print(f"device={args.device} threads={args.threads} lr={args.lr} python={args.python}")
    for size, n_steps in zip(sizes, steps):
        n_rows = EVAL_ROWS + n_steps * size["batch"]
        spec = {**size, "lr": args.lr, "device": args.device, "threads": args.threads,
                "data": str(cached_activations(args.cache, n_rows, size["d"]))}
        print(f"\nd={size['d']} latents={size['latents']} k={size['k']} "
              f"batch={size['batch']} steps={n_steps} (held-out FVU on {EVAL_ROWS} rows)")
        runs = compare_libraries(spec, args.libraries.split(","), args.python, args.repeats)
        print(f"{'library':12s} {'act/s':>8s} {'(each run)':>18s} {'peak RSS MiB':>13s} "
              f"{'training MiB':>13s} {'FVU':>8s}")
        results = {}
        for lib, done in runs.items():
            if isinstance(done, str):
                print(f"{lib}: failed: {done}")
                continue
            r = results[lib] = max(done, key=lambda run: run["activations_per_s"])
            each = "/".join(f"{run['activations_per_s']:.0f}" for run in done)
            gpu = f" {r['peak_gpu_mib']:.0f} GPU MiB" if "peak_gpu_mib" in r else ""
            print(f"{lib:12s} {r['activations_per_s']:8.0f} {each:>18s} {r['peak_rss_mib']:13.0f} "
                  f"{r['rss_growth_mib']:13.0f} {r['fvu']:8.4f}{gpu}", flush=True)
        ours = results.get("sparsealign")
        for lib, r in results.items():
            if ours and lib != "sparsealign":
                speedup = ours["activations_per_s"] / r["activations_per_s"]
                print(f"  sparsealign vs {lib}: {speedup:.2f}x "
                      f"throughput, FVU {100 * (ours['fvu'] / r['fvu'] - 1):+.2f}% relative")


if __name__ == "__main__":
    main()
