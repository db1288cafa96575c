"""Extraction (``sparsealign.extract.extract_network``) against a bare ``no_grad`` loop.

    python benchmarks/bench_extract.py [--quick] [--model cowley_direct_fit] [--device cpu]

The same random 112×112 RGB images, the same batch, the same model: the bare loop builds the
network and runs ``torch.no_grad`` forward passes up to the deepest requested layer (what
``extract_network`` computes, as it stops each pass there); ``extract_network`` also reduces
and writes the scoring stores, and with ``rows`` streams the SAE training rows to Zarr on
its writer thread. Runs alternate; the best wall time of each is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYERS = {"layer2": None, "layer4": None}     # as config/config.yaml's compact models


def make_images(n: int, seed: int = 0, size: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _truncated(net, last: str):
    """``net`` up to and including its child ``last`` when it is an ``nn.Sequential``."""
    import torch

    names = [name for name, _ in net.named_children()]
    if isinstance(net, torch.nn.Sequential) and last in names:
        return net[:names.index(last) + 1]
    return net


def on_cuda(name: str = "cowley_direct_fit"):
    """A ModelSpec of the registered model ``name`` whose network is built on CUDA (for
    ``extract_network``, which runs a model where ``build`` puts it)."""
    from dataclasses import replace

    from sparsealign.models import get_model

    base = get_model(name)
    return replace(base, build=lambda: base.build().cuda())


def cowley_direct_fit_cuda():
    """``bench_extract:cowley_direct_fit_cuda`` for :func:`sparsealign.models.get_model`."""
    return on_cuda("cowley_direct_fit")


def bare_loop(model: str, images, batch_size: int, device: str = "cpu",
              channels_last: bool = False) -> None:
    """The loop a user writes; ``channels_last`` also puts the network and each batch in the
    channels-last layout, as ``extract_network`` does (the same convolution kernels)."""
    import torch

    from sparsealign.models import get_model

    spec = get_model(model)
    last = spec.layers[list(LAYERS)[-1]]
    net = _truncated(spec.build().to(device).eval(), last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = spec.preprocess(images[start:start + batch_size]).to(device)
            out = net(batch.contiguous(memory_format=layout))
    if device.startswith("cuda"):
        out.cpu()


def run_extract(model, images, out_dir: Path, batch_size: int, rows, device="cpu"):
    from sparsealign.extract import extract_network

    ids = [f"img{i:05d}" for i in range(len(images))]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return extract_network(model, ids, images, LAYERS, out_dir, batch_size=batch_size,
                           rows=rows)


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(model: str, n_images: int, batch_size: int, repeats: int, rows_settings: dict,
            device: str = "cpu", all_positions: bool = False) -> dict:
    """Best wall seconds of the bare loop, of extraction, of extraction with rows (and, with
    ``all_positions``, with the rows of every position); bytes the rows stores hold on disk
    and in memory (uncompressed), per variant."""
    import contextlib
    import io

    images = make_images(n_images)
    variants = {"extract+rows": rows_settings}
    if all_positions:
        variants["extract+all rows"] = {**rows_settings, "positions": None}
    runs = {"bare": [], "bare channels-last": [], "extract": [], **{name: [] for name in variants}}
    cpu = {name: [] for name in runs}
    written = {}
    with tempfile.TemporaryDirectory(prefix="sparsealign-extract-") as tmp:
        tmp = Path(tmp)
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:                                                     # first-call costs
            bare_loop(model, images[:batch_size], batch_size, device)
            run_extract(model, images[:batch_size], tmp / "warm", batch_size, rows_settings,
                        device)
        for repeat in range(repeats):
            order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                with contextlib.redirect_stdout(io.StringIO()):
                    if name.startswith("bare"):
                        bare_loop(model, images, batch_size, device, name != "bare")
                    else:
                        out = run_extract(model, images, tmp / name, batch_size,
                                          variants.get(name), device)
                runs[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                if name in variants:
                    import zarr

                    paths = [layer["rows"] for layer in out.values()]
                    written[name] = {
                        "disk": sum(_bytes(p) for p in paths),
                        "raw": sum(zarr.open_group(p, mode="r")["responses"].nbytes
                                   for p in paths)}
    return {"seconds": {k: min(v) for k, v in runs.items()}, "each": runs, "written": written,
            "cpu_seconds": {k: min(v) for k, v in cpu.items()}}


def extract_rows(quick: bool, model: str = "cowley_direct_fit") -> list:
    import torch

    from common import Row, unavailable

    torch.set_num_threads(1)
    n, batch, repeats = (128, 32, 2) if quick else (256, 32, 3)
    rows_settings = {"positions": 16}
    what = f"{model}, {n} images of 112 px, batch {batch}, 1 thread"
    try:
        m = measure(model, n, batch, repeats, rows_settings, all_positions=True)
    except Exception as exc:  # e.g. the data mirror with the model's weights is missing
        return [unavailable("extraction", f"images/s, {what}", f"{type(exc).__name__}: {exc}",
                            ">= 0.95")]
    s = m["seconds"]
    each = ", ".join(f"{k} " + "/".join(f"{v:.2f}" for v in vals) for k, vals in m["each"].items())
    c = m["cpu_seconds"]
    rows = [Row("extraction", f"images per CPU s, extract_network (no rows store), {what}",
                n / c["extract"], "img/s", "bare no_grad loop", n / c["bare"], goal=">= 0.95",
                note=f"wall img/s {n / s['extract']:.1f} vs {n / s['bare']:.1f}; wall s, "
                     f"each run: {each}"),
            Row("extraction", f"images per CPU s, extract_network (no rows store), {what}",
                n / c["extract"], "img/s", "bare no_grad loop in channels-last layout",
                n / c["bare channels-last"], goal=">= 0.95",
                note="the same convolution kernels as extract_network: its own overhead")]
    for name, label in (("extract+rows", "16 positions"), ("extract+all rows", "all positions")):
        w, sec = m["written"][name], s[name]
        rows.append(Row("extraction", f"wall with the rows store ({label}, float16) / without",
                        sec, "s", "extract_network without rows", s["extract"], goal="<= 1.15",
                        note=f"{n / sec:.1f} img/s; rows written {w['raw'] / 2**20 / sec:.1f} "
                             f"MB/s uncompressed, {w['disk'] / 2**20 / sec:.1f} MB/s to disk "
                             f"({w['disk'] / 2**20:.0f} MiB)"))
    return rows


def main(argv=None) -> None:
    from common import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="cowley_direct_fit")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}")
    print_table(extract_rows(args.quick, args.model), "extraction")


if __name__ == "__main__":
    main()
