"""Benchmark the alignment metrics against reference implementations (not a test).

Prints, side by side in one run:

1. cross-validated ridge (ours) vs scikit-learn ``RidgeCV`` (and himalaya if installed)
   on n = 2000 stimuli, p = 2048 features, 2000 targets, the same 5 folds and α grid;
2. soft matching (ours: Hungarian identities or a guarded network simplex) vs POT
   ``ot.emd`` called directly on the same cost matrices;
3. streamed correlation + semi-matching at p = q = 16,384 units, n = 10,000 stimuli:
   time and peak traced memory against the memory budget.

Usage: ``python benchmarks/bench_align.py [--quick]`` (``--quick`` shrinks every size).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from sparsealign.align import fold_labels, score
from sparsealign.align.matching import transport_plan
from sparsealign.align.regression import DEFAULT_ALPHAS


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


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


def _himalaya_cv_ridge(x, y, folds):
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV

    return _reference_cv_ridge(x, y, folds, lambda xtr, ytr, xte: HimalayaRidgeCV(
        alphas=np.asarray(DEFAULT_ALPHAS)).fit(xtr, ytr).predict(xte))


def bench_ridge(n, p, q):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, p))
    weights = rng.standard_normal((p, 100)) @ rng.standard_normal((100, q)) / np.sqrt(100 * p)
    y = x @ weights + rng.standard_normal((n, q))
    folds = fold_labels(n, 5, seed=0)
    ours, t_ours = _timed(score, "ridge", x, y, n_folds=5, seed=0)
    print(f"\n== ridge, 5-fold CV, n={n}, p={p}, targets={q}, {len(DEFAULT_ALPHAS)} alphas ==")
    print(f"ours ({ours['solver'][0]}, GCV):   {t_ours:8.2f} s   mean r = {ours['mean']:.4f}"
          f"   folds = {np.round(ours['folds'], 4).tolist()}")
    ref, t_ref = _timed(_sklearn_cv_ridge, x, y, folds)
    print(f"sklearn RidgeCV (LOO):  {t_ref:8.2f} s   mean r = {np.mean(ref):.4f}"
          f"   folds = {np.round(ref, 4).tolist()}")
    print(f"speed-up {t_ref / t_ours:.1f}x; max |fold score difference| = "
          f"{np.max(np.abs(np.subtract(ours['folds'], ref))):.2e}")
    try:
        him, t_him = _timed(_himalaya_cv_ridge, x, y, folds)
        print(f"himalaya RidgeCV:       {t_him:8.2f} s   mean r = {np.mean(him):.4f}")
    except ImportError:
        print("himalaya: not installed")


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
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    if args.quick:
        bench_ridge(400, 512, 300)
        bench_soft_matching([(300, 300), (400, 200), (330, 200)])
        bench_semi_matching(2000, 2048, 256)
    else:
        bench_ridge(2000, 2048, 2000)
        bench_soft_matching([(1000, 1000), (2000, 1000), (1200, 1000), (3000, 3000)])
        bench_semi_matching(10_000, 16_384, 1024)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
