"""Batches from arrays and chunked activation stores: coverage, shuffling, cursor, errors."""

import numpy as np
import pytest
import torch

from sparsealign import schema
from sparsealign.errors import SparsealignError
from sparsealign.sae import SAEConfig, train_sae
from sparsealign.sae.data import (ArraySource, EpochPlan, Prefetcher, StoreSource, iter_batches,
                                  n_batches)
from conftest import Killed, kill_at


def chunked_store(path, x, chunk_rows=100):
    """An activation store whose rows are numbered in column 0, in chunks of ``chunk_rows``."""
    ds = schema.make_store(x, [f"s{i}" for i in range(len(x))],
                           [f"fc/{j}" for j in range(x.shape[1])], source="toy", layer="fc",
                           kind="neurons")
    return schema.write_atomic(ds, path, {"responses": {"chunks": (chunk_rows, x.shape[1])}})


@pytest.fixture
def numbered(tmp_path):
    x = np.random.default_rng(0).normal(size=(1050, 4)).astype(np.float32)
    x[:, 0] = np.arange(len(x))
    return chunked_store(tmp_path / "acts.zarr", x), x


def row_ids(batches):
    return np.concatenate([b[:, 0] for b in batches]).astype(int)


def test_store_epoch_visits_every_row_once_in_shuffled_windows(numbered):
    path, x = numbered
    source = StoreSource(path)
    assert (source.n_rows, source.d, source.block_rows) == (1050, 4, 100)
    plan = EpochPlan(source.n_rows, source.block_rows, 300, seed=0, epoch=0)
    assert max(plan.starts[1:] - plan.starts[:-1]) <= 300     # memory bound per window
    epochs = [list(iter_batches(source, 64, 300, seed=0, epoch=e)) for e in (0, 1)]
    for batches in epochs:
        assert len(batches) == n_batches(1050, 64)
        assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1)
        assert sorted(row_ids(batches)) == list(range(1050))
        np.testing.assert_array_equal(np.concatenate(batches), x[row_ids(batches)])
    assert not np.array_equal(row_ids(epochs[0]), row_ids(epochs[1]))
    first = row_ids(epochs[0])[:300]
    assert len(np.unique(first // 100)) > 1                   # rows mixed across chunks


@pytest.mark.parametrize("start_batch", [0, 3, 4, 9, 16, 17])
def test_cursor_resumes_the_same_stream(numbered, start_batch):
    source = StoreSource(numbered[0])
    full = list(iter_batches(source, 64, 300, seed=3, epoch=2))
    resumed = list(iter_batches(source, 64, 300, seed=3, epoch=2, start_batch=start_batch))
    assert len(resumed) == len(full) - start_batch
    for a, b in zip(full[start_batch:], resumed):
        np.testing.assert_array_equal(a, b)


def test_array_is_shuffled_whole():
    x = np.arange(500, dtype=np.float32)[:, None].repeat(2, axis=1)
    batches = list(iter_batches(ArraySource(x), 128, 64, seed=0, epoch=0))
    assert sorted(row_ids(batches)) == list(range(500))
    assert row_ids(batches)[:128].max() > 400


def test_nan_in_store_names_the_store(tmp_path):
    x = np.ones((300, 3), dtype=np.float32)
    path = chunked_store(tmp_path / "acts.zarr", x)
    import zarr
    zarr.open_group(path, mode="r+")["responses"][250, 1] = np.nan
    with pytest.raises(SparsealignError, match="acts.zarr: NaN or infinite activations"):
        train_sae(path, SAEConfig(n_latents=8, k=2, batch_size=64))


def test_missing_or_misshapen_store_is_rejected(tmp_path):
    with pytest.raises(SparsealignError, match="no such store"):
        StoreSource(tmp_path / "missing.zarr")
    trials = schema.make_store(np.ones((5, 3, 2)), list("abcde"), list("xyz"), source="v4",
                               layer="-", kind="recording")
    schema.save_store(trials, tmp_path / "trials.zarr")
    with pytest.raises(SparsealignError, match="dims"):
        StoreSource(tmp_path / "trials.zarr")


def test_prefetcher_reraises_and_stops():
    def broken():
        yield np.zeros((2, 2), dtype=np.float32)
        raise SparsealignError("boom")

    batches = Prefetcher(broken())
    with pytest.raises(SparsealignError, match="boom"):
        list(batches)
    batches.close()
    endless = Prefetcher(np.zeros((2, 2), dtype=np.float32) for _ in iter(int, 1))
    next(iter(endless))
    endless.close()                   # returns although the producer never ends


def test_training_on_a_store_resumes_exactly(tmp_path, numbered):
    path, _ = numbered
    config = SAEConfig(n_latents=16, k=2, batch_size=64, epochs=2, log_every=4,
                       shuffle_window_rows=300, dead_tokens=200)
    reference, _ = train_sae(path, config)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        train_sae(path, config, checkpoint=ckpt, checkpoint_every=7, log_fn=kill_at(24))
    resumed, _ = train_sae(path, config, checkpoint=ckpt)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
