"""The alignment metrics a config can name: the one list of them, cheap to import.

Name → (function of a module of :mod:`sparsealign.align`, axis title in figures, whether
it scores each target unit). :data:`sparsealign.align.METRICS` is built from this table
(importing the functions, and numpy and scipy with them); a config's metrics are checked
against its names without importing any. Adding a metric is a function in a module of
:mod:`sparsealign.align` plus one line here.
"""

ALIGNMENT_METRICS = {
    "semi_matching": ("matching.semi_matching", "Semi-matching (CV r)", True),
    "soft_matching": ("matching.soft_matching", "Soft-matching (CV r)", False),
    "hungarian": ("matching.hungarian", "One-to-one (CV r)", False),
    "ridge": ("regression.ridge", "Ridge predictivity (CV r)", True),
    "rsa": ("population.rsa", "RSA (CV Spearman)", False),
    "cka": ("population.cka", "Linear CKA", False),
    "cka_debiased": ("population.cka_debiased", "Debiased CKA", False),
    "procrustes": ("population.procrustes", "Procrustes similarity", False),
    "mutual_knn": ("population.mutual_knn", "Mutual k-NN", False),
}
