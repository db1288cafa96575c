"""Every benchmark, one process tree, one table of ratios against baselines run beside them.

    python benchmarks/run.py [--quick] [--only toy,dnn,streamed,extract,ridge]
                             [--python /work/bench-venv/bin/python] [--no-csv]

Each row is a figure of sparsealign and its baseline measured in this same run (a plain
torch loop, a peer library, an sgemm, a bare forward loop, the same rows in memory): the
ratio is what counts; absolute times depend on the machine and its load, printed at the
start and the end. Peer libraries (SAELens, sparsify, himalaya) run in worker processes
under ``--python`` (default ``$BENCH_PYTHON``, else this interpreter); a row whose peer is
not installed there says so. Rows are appended to ``benchmarks/results/benchmarks.csv``.
No benchmark is a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from common import (Row, append_csv, git_commit, load_average, now, print_table,  # noqa: E402
                    unavailable)

SECTIONS = ("toy", "dnn", "streamed", "extract", "ridge")


def _section(name: str, quick: bool, python: str) -> list[Row]:
    import bench_align
    import bench_extract
    import bench_sae

    if name == "toy":
        return bench_sae.toy_rows(quick)
    if name == "dnn":
        return bench_sae.dnn_rows(quick, python)
    if name == "streamed":
        return bench_sae.streamed_rows(quick)
    if name == "extract":
        return bench_extract.extract_rows(quick)
    if name == "ridge":
        return bench_align.ridge_rows(quick, python)
    raise ValueError(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {SECTIONS}")
    parser.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable),
                        help="interpreter with sae-lens, eai-sparsify and himalaya")
    parser.add_argument("--no-csv", action="store_true", help="print only")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    mode = "quick" if args.quick else "full"
    started, load_start, commit = now(), load_average(), git_commit()
    print(f"sparsealign benchmarks ({mode}) {started}; load average {load_start}; "
          f"{os.cpu_count()} cores; peers under {args.python}", flush=True)
    rows: list[Row] = []
    for name in args.only.split(","):
        print(f"\n--- {name} ---", flush=True)
        try:
            section = _section(name, args.quick, args.python)
        except Exception as exc:   # one broken section must not hide the others' rows
            traceback.print_exc()
            section = [unavailable(name, f"section {name}", f"{type(exc).__name__}: {exc}")]
        print_table(section, f"{name} done {now()}, load average {load_average()}")
        sys.stdout.flush()
        rows += section
    load_end = load_average()
    print_table(rows, f"sparsealign benchmarks ({mode}), started {started}, finished {now()}; "
                      f"load average {load_start} at start, {load_end} at end "
                      f"({os.cpu_count()} cores)")
    missed = [r for r in rows if r.goal and r.met is not True]
    print(f"\n{sum(r.met is True for r in rows)} of {sum(bool(r.goal) for r in rows)} goals "
          f"met" + (f"; not met or not measured: {len(missed)}" if missed else ""))
    if not args.no_csv:
        print(f"appended to {append_csv(rows, mode, started, load_start, load_end, commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
