"""Where a CUDA SAE step of ``gpu.sh``'s size goes: run on a CUDA machine after ``gpu.sh``.

For each decoder path (``sparse``: embedding_bag + index_add kernels; ``dense``: matmuls):

- ``train_sae`` on a host array (what the benchmark times: data checks, shuffled gather,
  pinning, copy, step), steps/s;
- the same steps with one batch already on the GPU (``_train_step`` alone), steps/s;
- the CUDA kernels that take most of the device-only loop (torch.profiler).

    PYTHONPATH=src python benchmarks/gpu_sae_profile.py [--steps 300]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from sparsealign.sae import SAEConfig, train_sae
from sparsealign.sae.train import STEP_KEYS, TrainState, _train_step, autocast_for
from sparsealign.sae.variants import build_sae

SIZE = {"d": 768, "latents": 12288, "k": 32, "batch": 2048}


def config(impl: str) -> SAEConfig:
    return SAEConfig(architecture="topk", n_latents=SIZE["latents"], k=SIZE["k"],
                     batch_size=SIZE["batch"], lr=1e-3, seed=0, device="cuda",
                     aux_k_coef=0.0, dead_tokens=10**12, log_every=10**9, decoder_impl=impl)


def device_loop(cfg: SAEConfig, x: torch.Tensor, steps: int, profile: bool = False):
    sae = build_sae(cfg, x.shape[1]).cuda().train()
    opt = torch.optim.AdamW(sae.parameters(), lr=cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = TrainState(torch.zeros(cfg.n_latents, dtype=torch.long, device="cuda"),
                       torch.zeros(len(STEP_KEYS), device="cuda"))
    autocast = autocast_for(cfg, torch.device("cuda"))
    for _ in range(10):
        _train_step(sae, opt, sched, state, x, cfg, autocast)
    torch.cuda.synchronize()
    prof = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                               torch.profiler.ProfilerActivity.CPU])
            if profile else None)
    start = time.perf_counter()
    if prof:
        prof.__enter__()
    for _ in range(steps):
        _train_step(sae, opt, sched, state, x, cfg, autocast)
    torch.cuda.synchronize()
    if prof:
        prof.__exit__(None, None, None)
    return steps / (time.perf_counter() - start), prof


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_sae_profile.py: no CUDA device; nothing was run", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    host = rng.standard_normal((args.steps * SIZE["batch"], SIZE["d"]), dtype=np.float32)
    x = torch.from_numpy(host[:SIZE["batch"]]).cuda()
    for impl in ("sparse", "dense"):
        cfg = config(impl)
        train_sae(host[:20 * SIZE["batch"]], cfg)                        # first-call costs
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_sae(host, cfg)
        torch.cuda.synchronize()
        wall = args.steps / (time.perf_counter() - start)
        alone, _ = device_loop(cfg, x, args.steps)
        _, prof = device_loop(cfg, x, 50, profile=True)
        print(f"\n== decoder {impl}: train_sae from a host array {wall:.0f} steps/s "
              f"({wall * SIZE['batch']:.0f} act/s); step alone on the GPU {alone:.0f} steps/s "
              f"({alone * SIZE['batch']:.0f} act/s)", flush=True)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14,
                                        max_name_column_width=60), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
