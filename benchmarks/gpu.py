"""The CUDA benchmarks of ``benchmarks/gpu.sh`` (run that; this is its body).

Sections, each a few tens of seconds on a datacentre GPU:

- ``sae``: sparsealign vs SAELens vs sparsify, d = 768, 12,288 latents, k = 32, batch 2,048,
  bf16 autocast, each library in its own worker process (``bench_sae.py``); achieved
  TFLOP/s of useful work as a fraction of the GPU's bf16 peak, both the nominal peak of
  :data:`BF16_PEAK_TFLOPS` and a large bf16 matmul measured in this run;
- ``ridge``: CV ridge, n = 2,000, p = 2,048, 2,000 targets, on CUDA vs on the CPU (NumPy)
  vs himalaya's RidgeCV on its ``torch_cuda`` backend;
- ``semi``: correlation + semi-matching, 5 folds, n = 10,000, p = q = 16,384 on CUDA;
  TFLOP/s of its correlation products against the measured fp32 matmul rate;
- ``extract``: ``extract_network`` on CUDA vs a bare ``no_grad`` loop on CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from common import (Row, append_csv, git_commit, load_average, now,  # noqa: E402
                    print_table, timed, unavailable)

#: Nominal dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device-name substring.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                    "H100": 756.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0}


def nominal_peak(name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def matmul_tflops(dtype, n: int = 8192, reps: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e12


def sae_rows(python: str, steps: int, decoder_impl: str = "auto") -> list[Row]:
    import torch

    import bench_sae

    size = {"d": 768, "latents": 12288, "k": 32, "batch": 2048}
    n_rows = bench_sae.EVAL_ROWS + steps * size["batch"]
    data = bench_sae.cached_activations(Path("/tmp/sparsealign-bench"), n_rows, size["d"])
    spec = {**size, "lr": 1e-3, "device": "cuda", "threads": 4, "data": str(data),
            "decoder_impl": decoder_impl}
    runs = bench_sae.compare_libraries(spec, list(bench_sae.LIBRARIES), python, repeats=1)
    name = torch.cuda.get_device_name()
    measured = matmul_tflops(torch.bfloat16)
    nominal = nominal_peak(name)
    shape = f"d=768 L=12288 k=32 b=2048 bf16, decoder {decoder_impl}"
    rows = []
    ours = runs["sparsealign"]
    if isinstance(ours, str):
        return [unavailable("GPU SAE", f"sparsealign, {shape}", ours)]
    ours = ours[0]
    flops = bench_sae.useful_flops_per_step(size["batch"], size["d"], size["latents"], size["k"])
    tflops = ours["activations_per_s"] / size["batch"] * flops / 1e12
    rows.append(Row("GPU SAE", f"TFLOP/s of useful work, {shape} ({name})", tflops, "TFLOP/s",
                    "measured bf16 8192³ matmul", measured,
                    note=f"{100 * tflops / nominal:.1f} % of the nominal {nominal:.0f} TFLOP/s "
                         "bf16 peak" if nominal else "nominal peak unknown for this GPU"))
    for lib, goal in (("sae-lens", ">= 3.5"), ("sparsify", ">= 1.5")):
        if isinstance(runs[lib], str):
            rows.append(unavailable("GPU SAE", f"vs {lib}, {shape}", runs[lib]))
            continue
        theirs = runs[lib][0]
        rows.append(Row("GPU SAE", f"activations/s vs {lib}, {shape}", ours["activations_per_s"],
                        "act/s", lib, theirs["activations_per_s"],
                        note=f"goal on CPU {goal}; FVU {ours['fvu']:.4f} vs {theirs['fvu']:.4f}; "
                             f"GPU MiB {ours.get('peak_gpu_mib', 0):.0f} vs "
                             f"{theirs.get('peak_gpu_mib', 0):.0f}"))
    return rows


def ridge_rows(python: str) -> list[Row]:
    import bench_align
    from sparsealign.align import score

    n, p, q = 2000, 2048, 2000
    x, y, _ = bench_align.ridge_data(n, p, q)
    score("ridge", x[:200], y[:200, :10], n_folds=5, seed=0, device="cuda")   # CUDA init
    gpu, t_gpu = timed(score, "ridge", x, y, n_folds=5, seed=0, device="cuda")
    cpu, t_cpu = timed(score, "ridge", x, y, n_folds=5, seed=0, device="cpu")
    size = f"n={n} p={p} targets={q}, 5 folds"
    rows = [Row("GPU ridge", f"CV ridge on CUDA vs on the CPU (NumPy), {size}", t_cpu / t_gpu,
                "x", "sparsealign on CPU", 1.0,
                note=f"{t_gpu:.2f} s vs {t_cpu:.2f} s; mean r {gpu['mean']:.4f} vs "
                     f"{cpu['mean']:.4f}")]
    him = bench_align.run_himalaya(n, p, q, python, backend="torch_cuda")
    if isinstance(him, str):
        rows.append(unavailable("GPU ridge", f"vs himalaya RidgeCV (torch_cuda), {size}", him))
    else:
        rows.append(Row("GPU ridge", f"CV ridge speed-up vs himalaya RidgeCV (torch_cuda), {size}",
                        him["seconds"] / t_gpu, "x", "himalaya on CUDA", 1.0, goal=">= 10",
                        note=f"{t_gpu:.2f} s vs {him['seconds']:.2f} s; mean r "
                             f"{gpu['mean']:.4f} vs {np.mean(him['folds']):.4f}"))
    return rows


def semi_rows() -> list[Row]:
    import torch

    from sparsealign.align import score

    n, p = 10_000, 16_384
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, p), dtype=np.float32)
    y = 0.5 * x[:, rng.permutation(p)] + rng.standard_normal((n, p), dtype=np.float32)
    score("semi_matching", x[:500, :256], y[:500, :256], n_folds=5, seed=0, device="cuda")
    result, seconds = timed(score, "semi_matching", x, y, n_folds=5, seed=0, device="cuda")
    # Per fold: the fit-rows and test-rows correlation products, p·q·n multiply-adds in all.
    tflops = 2 * n * p * p * 5 / seconds / 1e12
    fp32 = matmul_tflops(torch.float32)
    return [Row("GPU semi-matching", f"TFLOP/s, 5-fold semi-matching, n={n}, p=q={p}", tflops,
                "TFLOP/s", "measured fp32 8192³ matmul", fp32,
                note=f"{seconds:.1f} s; precision {result['precision']}; "
                     f"A->B {result['mean']:.4f}")]


def extract_rows() -> list[Row]:
    import bench_extract

    n, batch = 4096, 128     # a few seconds: the stores' fixed costs are not the figure
    try:
        m = bench_extract.measure("bench_extract:cowley_direct_fit_cuda", n, batch, 2,
                                  {"positions": 16}, device="cuda")
    except Exception as exc:
        return [unavailable("GPU extraction", "extract_network on CUDA",
                            f"{type(exc).__name__}: {exc}", ">= 0.95")]
    s = m["seconds"]
    what = f"cowley_direct_fit on CUDA, {n} images, batch {batch}"
    return [Row("GPU extraction", f"images/s, extract_network (no rows), {what}",
                n / s["extract"], "img/s", "bare no_grad loop on CUDA", n / s["bare"],
                goal=">= 0.95"),
            Row("GPU extraction", "wall with the rows store (16 positions) / without",
                s["extract+rows"], "s", "extract_network without rows", s["extract"],
                goal="<= 1.15",
                note=f"rows written {m['written']['extract+rows']['raw'] / 2**20 / s['extract+rows']:.1f}"
                     " MB/s")]


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable))
    parser.add_argument("--only", default="sae,ridge,semi,extract")
    parser.add_argument("--sae-steps", type=int, default=100)
    parser.add_argument("--decoder-impl", default="auto", choices=("auto", "sparse", "dense"),
                        help="sparsealign's SAE decoder path in the sae section")
    parser.add_argument("--no-csv", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu.py: CUDA is not available to this torch "
              f"({torch.__version__}); these benchmarks need an NVIDIA GPU. Nothing was run.",
              file=sys.stderr)
        return 2
    started, load_start, commit = now(), load_average(), git_commit()
    print(f"GPU benchmarks {started} on {torch.cuda.get_device_name()}; peers under "
          f"{args.python}", flush=True)
    sections = {"sae": lambda: sae_rows(args.python, args.sae_steps, args.decoder_impl),
                "ridge": lambda: ridge_rows(args.python), "semi": semi_rows,
                "extract": extract_rows}
    rows = []
    for name in args.only.split(","):
        start = time.perf_counter()
        try:
            rows += sections[name]()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rows.append(unavailable(name, f"GPU section {name}", f"{type(exc).__name__}: {exc}"))
        print(f"--- {name}: {time.perf_counter() - start:.0f} s", flush=True)
    print_table(rows, f"GPU benchmarks, {started} to {now()}, {torch.cuda.get_device_name()}")
    if not args.no_csv:
        append_csv(rows, "gpu", started, load_start, load_average(), commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
