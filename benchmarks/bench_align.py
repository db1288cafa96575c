"""Benchmark the alignment metrics against reference implementations (not a test).

Prints, side by side in one run:

1. cross-validated ridge (ours) vs scikit-learn ``RidgeCV`` (and himalaya if installed)
   on n = 2000 stimuli, p = 2048 features, 2000 targets, the same 5 folds and α grid;
2. soft matching (ours: Hungarian identities or a guarded network simplex) vs POT
   ``ot.emd`` called directly on the same cost matrices;
3. streamed correlation + semi-matching at p = q = 16,384 units, n = 10,000 stimuli:
   time and peak traced memory against the memory budget.

Usage: ``python benchmarks/bench_align.py [--quick]`` (``--quick`` shrinks every size).
himalaya runs in a worker process under ``--python`` / ``$BENCH_PYTHON`` (an environment
with himalaya installed; this checkout's ``src`` is put on its path), on the same data,
folds and α grid (the data are regenerated there from the same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timed as _timed  # noqa: E402
from sparsealign.align import fold_labels, score  # noqa: E402
from sparsealign.align.matching import transport_plan  # noqa: E402
from sparsealign.align.regression import DEFAULT_ALPHAS  # noqa: E402


def _reference_cv_ridge(x, y, folds, fit_predict):
    """The same protocol as ours with another library's RidgeCV inside each train fold:
    standardise on train statistics, predict the test fold, mean Pearson r over targets."""
    scores = []
    for k in range(folds.max() + 1):
        tr, te = folds != k, folds == k
        mx, sx, my, sy = x[tr].mean(0), x[tr].std(0), y[tr].mean(0), y[tr].std(0)
        xt, yt = (x - mx) / sx, (y - my) / sy
        pred = np.asarray(fit_predict(xt[tr], yt[tr], xt[te]))
        pred, obs = pred - pred.mean(0), yt[te] - yt[te].mean(0)
        r = (pred * obs).sum(0) / np.sqrt((pred ** 2).sum(0) * (obs ** 2).sum(0))
        scores.append(float(r.mean()))
    return scores


def _sklearn_cv_ridge(x, y, folds):
    """RidgeCV with efficient LOO per target."""
    from sklearn.linear_model import RidgeCV

    return _reference_cv_ridge(x, y, folds, lambda xtr, ytr, xte: RidgeCV(
        alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(xtr, ytr).predict(xte))


def _himalaya_cv_ridge(x, y, folds, backend="numpy"):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    to_numpy = set_backend(backend).to_numpy
    return _reference_cv_ridge(x, y, folds, lambda xtr, ytr, xte: to_numpy(HimalayaRidgeCV(
        alphas=np.asarray(DEFAULT_ALPHAS)).fit(xtr, ytr).predict(xte)))


def ridge_data(n, p, q, seed=0):
    """Low-rank linear targets plus noise, and the 5 outer folds every library uses."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    weights = rng.standard_normal((p, 100)) @ rng.standard_normal((100, q)) / np.sqrt(100 * p)
    y = x @ weights + rng.standard_normal((n, q))
    return x, y, fold_labels(n, 5, seed=0)


def himalaya_worker(n, p, q, backend="numpy") -> dict:
    """Run in the worker process: himalaya's RidgeCV in every outer fold."""
    x, y, folds = ridge_data(n, p, q)
    scores, seconds = _timed(_himalaya_cv_ridge, x, y, folds, backend)
    return {"seconds": seconds, "folds": scores}


def run_himalaya(n, p, q, python, backend="numpy") -> dict | str:
    """``himalaya_worker`` under ``python``; a string saying why when it could not run."""
    proc = subprocess.run([python, __file__, "--himalaya-worker", str(n), str(p), str(q),
                           backend], capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_ridge(n, p, q, python=None) -> dict:
    """Ours vs sklearn (in this process) and himalaya (worker under ``python``, if given)."""
    x, y, folds = ridge_data(n, p, q)
    ours, t_ours = _timed(score, "ridge", x, y, n_folds=5, seed=0)
    print(f"\n== ridge, 5-fold CV, n={n}, p={p}, targets={q}, {len(DEFAULT_ALPHAS)} alphas ==")
    print(f"ours ({ours['solver'][0]}, GCV):   {t_ours:8.2f} s   mean r = {ours['mean']:.4f}"
          f"   folds = {np.round(ours['folds'], 4).tolist()}")
    ref, t_ref = _timed(_sklearn_cv_ridge, x, y, folds)
    print(f"sklearn RidgeCV (LOO):  {t_ref:8.2f} s   mean r = {np.mean(ref):.4f}"
          f"   folds = {np.round(ref, 4).tolist()}")
    print(f"speed-up {t_ref / t_ours:.1f}x; max |fold score difference| = "
          f"{np.max(np.abs(np.subtract(ours['folds'], ref))):.2e}")
    out = {"ours": (t_ours, ours["folds"]), "sklearn": (t_ref, ref)}
    him = run_himalaya(n, p, q, python or sys.executable)
    if isinstance(him, str):
        print(f"himalaya: not run ({him})")
        out["himalaya"] = him
    else:
        print(f"himalaya RidgeCV:       {him['seconds']:8.2f} s   mean r = "
              f"{np.mean(him['folds']):.4f}   speed-up {him['seconds'] / t_ours:.1f}x")
        out["himalaya"] = (him["seconds"], him["folds"])
    return out


def ridge_rows(quick: bool, python: str) -> list:
    """CV ridge: ours vs himalaya (goal ≥ 10× at equal scores) and vs sklearn."""
    from common import Row, unavailable

    n, p, q = (400, 512, 300) if quick else (2000, 2048, 2000)
    size = f"n={n} p={p} targets={q}, 5 folds, {len(DEFAULT_ALPHAS)} alphas"
    res = bench_ridge(n, p, q, python)
    t_ours, ours = res["ours"]
    rows = []
    for lib, goal in (("himalaya", ">= 10"), ("sklearn", "")):
        figure = f"CV ridge speed-up vs {lib} RidgeCV, {size}"
        if isinstance(res[lib], str):
            rows.append(unavailable("alignment", figure, f"{lib}: {res[lib]}", goal))
            continue
        t_ref, ref = res[lib]
        diff = float(np.max(np.abs(np.subtract(ours, ref))))
        equal = abs(np.mean(ours) - np.mean(ref)) <= 1e-3      # "at equal scores"
        rows.append(Row("alignment", figure, t_ref / t_ours, "x", f"{lib} RidgeCV",
                        1.0, goal=goal, met=None if not goal else (t_ref / t_ours >= 10
                                                                  and equal),
                        note=f"{t_ours:.2f} s vs {t_ref:.2f} s; mean test r {np.mean(ours):.4f}"
                             f" vs {np.mean(ref):.4f}; max |fold r diff| {diff:.1e}"))
    return rows


def bench_soft_matching(sizes):
    import ot

    print("\n== soft matching (exact OT, uniform marginals, cost 1 - r) ==")
    print(f"{'p x q':>11} {'ours s':>8} {'solver':>19} {'ot.emd s':>9} {'ot.emd status':>28}"
          f" {'|objective diff|':>17}")
    rng = np.random.default_rng(1)
    for p, q in sizes:
        sim = np.corrcoef(rng.standard_normal((200, p + q)).T)[:p, p:]
        (plan, info), t_ours = _timed(transport_plan, sim)
        (ref, log), t_ref = _timed(ot.emd, np.full(p, 1 / p), np.full(q, 1 / q), 1 - sim,
                                   log=True)
        status = "optimal" if log["result_code"] == 1 else (log["warning"] or "?")[:28]
        diff = abs((plan * sim).sum() - (ref * sim).sum())
        print(f"{p:>5} x {q:<5} {t_ours:8.2f} {info['solver']:>19} {t_ref:9.2f} {status:>28}"
              f" {diff:17.2e}")


def bench_semi_matching(n, p, budget_mb):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, p), dtype=np.float32)
    y = 0.5 * x[:, rng.permutation(p)] + rng.standard_normal((n, p), dtype=np.float32)
    inputs_mb = (x.nbytes + y.nbytes) / 2**20
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result, elapsed = _timed(score, "semi_matching", x, y, n_folds=5, seed=0,
                             memory_budget_mb=budget_mb)
    peak = (tracemalloc.get_traced_memory()[1] - before) / 2**20
    tracemalloc.stop()
    full_mb = p * p * 4 / 2**20
    itemsize = 4 if result["precision"] == "float32" else 8
    print(f"\n== correlation + semi-matching, 5-fold CV, n={n}, p=q={p}, float32 inputs ==")
    print(f"time {elapsed:.1f} s; precision {result['precision']}; "
          f"{result['block_columns']} target columns per block")
    print(f"peak traced memory above the inputs: {peak:.0f} MiB = standardised source copy "
          f"{n * p * itemsize / 2**20:.0f} MiB + block working set (budget {budget_mb} MiB); "
          f"inputs {inputs_mb:.0f} MiB; one full p x q float32 matrix would be "
          f"{full_mb:.0f} MiB, all folds' fit+test matrices {10 * full_mb:.0f} MiB")
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    print(f"semi-matching A->B {result['mean']:.4f} ± {result['sem']:.4f}, "
          f"B->A {result['reverse_mean']:.4f}, mutual pairs/fold {result['mutual_pairs']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable),
                        help="interpreter with himalaya installed")
    parser.add_argument("--himalaya-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.himalaya_worker:
        n, p, q, backend = args.himalaya_worker
        print(json.dumps(himalaya_worker(int(n), int(p), int(q), backend)))
        return
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    if args.quick:
        bench_ridge(400, 512, 300, args.python)
        bench_soft_matching([(300, 300), (400, 200), (330, 200)])
        bench_semi_matching(2000, 2048, 256)
    else:
        bench_ridge(2000, 2048, 2000, args.python)
        bench_soft_matching([(1000, 1000), (2000, 1000), (1200, 1000), (3000, 3000)])
        bench_semi_matching(10_000, 16_384, 1024)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
