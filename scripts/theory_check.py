"""Measurement (not a test): the theory table and figure of already-trained toy models.

Usage: PYTHONPATH=src python scripts/theory_check.py RESULTS_DIR [FIGURE_PNG]
RESULTS_DIR holds systems/toy/m{8,16,32}_seed{0..5}.{pt,zarr} and, for the comparison with
the pipeline's cross-validated semi-matching, toy/alignment.csv.
"""
import sys
import time

import pandas as pd

from sparsealign import theory

RESULTS = sys.argv[1] if len(sys.argv) > 1 else "/work/clone-full/results"
FIGURE = sys.argv[2] if len(sys.argv) > 2 else "theory_check.png"
R = f"{RESULTS}/systems/toy"
models, stores, labels = [], [], []
for h in (8, 16, 32):
    for s in range(6):
        models.append(f"{R}/m{h}_seed{s}.pt"); stores.append(f"{R}/m{h}_seed{s}.zarr")
        labels.append({"hidden": h, "pair": s // 2, "seed": s})
t = time.time()
tab = theory.run(models, stores, labels, {"n_features": 64, "feature_probability": 0.1,
                 "threshold": 0.5, "n_samples": 200_000}, FIGURE.replace(".png", ".csv"), FIGURE)
print(f"{time.time()-t:.1f}s")
cv = pd.read_csv(f"{RESULTS}/toy/alignment.csv")
cv = cv[(cv.comparison == "Neuron→Neuron") & (cv.metric == "semi_matching") & (cv.direction == "both")]
cv = cv.drop_duplicates(["hidden", "pair"]).set_index(["hidden", "pair"])["mean"]
tab["pipeline_cv_semi"] = [cv.get((h, p)) for h, p in zip(tab.hidden, tab.pair)]
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
cols = ["hidden", "pair", "n_represented_a", "n_represented_b", "n_shared", "arrangement_semi_matching",
        "preactivation_semi_matching", "predicted_semi_matching", "measured_semi_matching", "pipeline_cv_semi",
        "semi_matching_difference", "predicted_vs_measured_r", "preactivation_vs_measured_r",
        "max_abs_correlation_difference", "dead_a", "dead_b", "within_band"]
print(tab[cols].round(4).to_string())
print(tab.groupby("hidden")[["n_represented_a", "n_represented_b", "n_shared", "arrangement_semi_matching",
      "predicted_semi_matching", "measured_semi_matching"]].mean().round(4))
