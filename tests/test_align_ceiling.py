"""Noise ceiling: split-half + Spearman–Brown recovers a known reliability."""

import numpy as np
import pytest

from sparsealign.align import score
from sparsealign.align.ceiling import noise_ceiling
from sparsealign.errors import SparsealignError


def _recording(n=600, units=30, repeats=6, noise_sd=1.5, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, units))
    trials = signal[:, :, None] + noise_sd * rng.standard_normal((n, units, repeats))
    reliability = 1 / (1 + noise_sd ** 2 / repeats)   # of the mean over all repeats
    return signal, trials, reliability


def test_ceiling_recovers_known_reliability():
    _, trials, reliability = _recording()
    ceiling = noise_ceiling(trials)
    assert ceiling["mean"] == pytest.approx(reliability, abs=0.02)
    assert "Spearman–Brown" in ceiling["formula"]


def test_perfect_model_scores_one_after_normalisation():
    signal, trials, reliability = _recording()
    result = score("semi_matching", signal, trials.mean(axis=2), target_repeats=trials)
    assert result["mean"] == pytest.approx(np.sqrt(reliability), abs=0.03)
    assert result["normalised"]["mean"] == pytest.approx(1.0, abs=0.05)
    assert result["ceiling"]["mean"] == pytest.approx(reliability, abs=0.02)
    assert "formula" in result["normalised"] and "formula" in result["ceiling"]


def test_ceiling_from_a_store_with_repeats_and_nan_padding():
    from sparsealign.schema import make_store

    signal, trials, reliability = _recording(repeats=8)
    trials[::3, :, 7] = np.nan                       # some stimuli have 7 repeats
    ids = [f"s{i:04d}" for i in range(signal.shape[0])]
    units = [f"u{j:02d}" for j in range(signal.shape[1])]
    rec = make_store(trials, ids, units, source="sim", layer="v4", kind="recording")
    order = np.random.default_rng(1).permutation(len(ids))      # rows matched by id
    model = make_store(signal[order], np.asarray(ids)[order], units, source="m",
                       layer="l", kind="neurons")
    result = score("ridge", model, rec)
    assert result["ceiling"]["mean"] == pytest.approx(1 / (1 + 1.5 ** 2 / 7.7), abs=0.03)
    assert result["normalised"]["mean"] == pytest.approx(1.0, abs=0.06)


def test_too_few_repeats_is_an_error():
    with pytest.raises(SparsealignError, match="at least 2 repeats"):
        noise_ceiling(np.zeros((10, 3, 1)))
    trials = np.random.default_rng(0).standard_normal((10, 3, 2))
    trials[4, 1, 1] = np.nan
    with pytest.raises(SparsealignError, match="fewer than 2"):
        noise_ceiling(trials)
