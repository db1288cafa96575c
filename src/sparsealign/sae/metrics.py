"""Reconstruction and sparsity metrics, as pure functions.

Each takes NumPy arrays or torch tensors and returns a 0-d value of the same kind, so the
trainer can keep them on the device and read them in batches.
"""

from __future__ import annotations


def mse(x, x_hat):
    """Mean squared error over rows and dimensions.

    Parameters
    ----------
    x, x_hat : (n, d) inputs and reconstructions.
    """
    return ((x_hat - x) ** 2).mean()


def fvu(x, x_hat):
    """Fraction of variance unexplained, centred: Σ‖x − x̂‖² / Σ‖x − x̄‖².

    Parameters
    ----------
    x, x_hat : (n, d) inputs and reconstructions; x̄ is the mean row of ``x``.

    Returns
    -------
    0 for a perfect reconstruction, 1 for predicting the mean.
    """
    return ((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


def explained_variance(x, x_hat):
    """Explained variance averaged uniformly over dimensions: mean_j 1 − Var(r_j)/Var(x_j).

    Unlike ``1 − fvu`` (which weights dimensions by their variance) every dimension counts
    the same; residuals r = x − x̂ are centred, so a constant offset is not penalised.

    Parameters
    ----------
    x, x_hat : (n, d); dimensions with zero variance in ``x`` give inf/nan, as they should.
    """
    residual = x - x_hat
    return (1 - ((residual - residual.mean(0)) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)).mean()


def fvu_and_explained_variance(x, x_hat):
    """``(fvu(x, x_hat), explained_variance(x, x_hat))`` sharing their intermediates (the
    trainer's per-step form: six reductions instead of eleven)."""
    residual = x - x_hat
    total = ((x - x.mean(0)) ** 2).sum(0)
    unexplained = ((residual - residual.mean(0)) ** 2).sum(0)
    return (residual ** 2).sum() / total.sum(), (1 - unexplained / total).mean()


def l0(z):
    """Mean number of non-zero latents per row.

    Parameters
    ----------
    z : (n, latents) codes.
    """
    return ((z != 0).sum(-1) * 1.0).mean()


def dead_fraction(z):
    """Fraction of latents that are zero on every row of ``z`` (the token window given).

    Parameters
    ----------
    z : (n, latents) codes over a window of n tokens.
    """
    return ((z != 0).sum(0) == 0).sum() / z.shape[-1]
