"""Alignment metrics between two sets of units (networks, SAE latents, brains).

``score(metric, source, target, n_folds=5, seed=0, **options)`` is the entry point;
``METRICS`` maps names to the metric functions; ``feature_recovery`` compares units with
known ground-truth features; ``noise_ceiling`` estimates a recording's reliability. See
:mod:`sparsealign.align.crossval` for the conventions and edge-case policies.
"""

from sparsealign.align.ceiling import noise_ceiling
from sparsealign.align.crossval import METRICS, bootstrap, fold_labels, permutation_null, score
from sparsealign.align.matching import feature_recovery

__all__ = ["METRICS", "bootstrap", "feature_recovery", "fold_labels", "noise_ceiling",
           "permutation_null", "score"]
