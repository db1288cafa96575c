"""Training: every variant on a planted sparse dictionary, AuxK, determinism, exact resume."""

import numpy as np
import pytest
import torch

from sparsealign.errors import SparsealignError
from sparsealign.sae import SAEConfig, build_sae, encode_array, train_sae
from conftest import Killed, kill_at

D_IN, N_FEATURES, K_TRUE = 16, 32, 3


def planted(n=16384, seed=0):
    """Rows with exactly K_TRUE of N_FEATURES unit directions active, magnitudes U[0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(N_FEATURES, D_IN))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n, N_FEATURES))
    active = np.argsort(rng.random((n, N_FEATURES)), axis=1)[:, :K_TRUE]
    np.put_along_axis(codes, active, rng.uniform(0.5, 1.5, size=(n, K_TRUE)), axis=1)
    return (codes @ dictionary).astype(np.float32), dictionary


def recovered(sae, dictionary, cos=0.9):
    """Fraction of true features with a decoder row at |cosine| > cos."""
    w = sae.W_dec.detach().cpu().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return float((np.abs(dictionary @ w.T).max(axis=1) > cos).mean())


def cfg(**kw):
    base = dict(n_latents=64, k=K_TRUE, batch_size=256, epochs=8, lr=1e-2, log_every=64,
                dead_tokens=20_000)
    return SAEConfig(**{**base, **kw})


# Stated FVU thresholds after 512 steps with default settings: a linear encoder's floor on
# this 2x-overcomplete dictionary is ~0.07 (TopK reaches ~0.08); ReLU-L1 and JumpReLU pay
# some shrinkage for a code about as sparse as the truth (L0 ≈ 3-10).
MAX_FVU = {"topk": 0.1, "batchtopk": 0.12, "relu": 0.12, "jumprelu": 0.13}


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.mark.parametrize("arch", sorted(MAX_FVU))
def test_variant_learns_planted_dictionary(arch, data):
    x, dictionary = data
    max_fvu = MAX_FVU[arch]
    sae, history = train_sae(x, cfg(architecture=arch))
    assert history["fvu"][-1] < max_fvu
    assert history["fvu"][-1] < history["fvu"][0]
    assert recovered(sae, dictionary) >= 0.9
    assert {len(v) for k, v in history.items() if k != "final"} == {len(history["step"])}
    z = encode_array(sae, x[:2000])
    x_hat = sae.decode(torch.from_numpy(z)).detach().numpy()
    held_fvu = ((x_hat - x[:2000]) ** 2).sum() / ((x[:2000] - x[:2000].mean(0)) ** 2).sum()
    assert held_fvu < max_fvu * 1.5  # the inference form reconstructs as well as training did
    if arch == "topk":
        assert ((z != 0).sum(axis=1) == K_TRUE).all()
        assert history["l0"][-1] == K_TRUE
    if arch == "batchtopk":
        assert history["l0"][-1] == pytest.approx(K_TRUE)          # exact on every batch
        assert (z != 0).sum(axis=1).mean() == pytest.approx(K_TRUE, rel=0.25)  # threshold


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_bf16_autocast_trains(arch, data):
    # The CUDA precision path (custom autograd functions under autocast), run on CPU.
    sae, history = train_sae(data[0][:8192], cfg(architecture=arch, epochs=2,
                                                 precision="bf16"))
    assert history["fvu"][-1] < 0.3 and all(np.isfinite(history["loss"]))
    assert sae.W_dec.dtype == torch.float32


def test_training_is_deterministic_on_cpu(data):
    x = data[0][:4096]
    runs = [train_sae(x, cfg(epochs=2))[0].state_dict() for _ in range(2)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = train_sae(x, cfg(epochs=2, seed=1))[0].state_dict()
    assert not torch.equal(runs[0]["W_dec"], other["W_dec"])


def test_aux_loss_matches_its_definition():
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(n_latents=32, k=4, aux_k=5, decoder_impl="sparse"), 8)
    x = torch.randn(64, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[1, 4, 9, 17, 20, 30]] = True
    out = sae.training_step(x, dead)
    pre = sae.pre_acts(x).detach()
    values, idx = pre.masked_fill(~dead, float("-inf")).topk(5, dim=1)
    e_hat = torch.zeros(64, 32).scatter(1, idx, values.relu()) @ sae.W_dec.detach()
    expected = ((e_hat - (x - out.x_hat)) ** 2).mean()
    assert out.terms["aux_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    no_dead = sae.training_step(x, torch.zeros(32, dtype=torch.bool))
    assert no_dead.terms["aux_loss"].item() == 0.0


def test_aux_k_revives_dead_latents(data):
    x = data[0][:8192]

    def dead_after(aux_k_coef):
        config = cfg(aux_k_coef=aux_k_coef, epochs=4, dead_tokens=4096)
        sae = build_sae(config, D_IN)
        with torch.no_grad():   # half the latents read too weakly to ever win the top k
            sae.W_enc[::2] *= 0.01
        sae, history = train_sae(x, config, init=sae)
        return history["dead_fraction"][-1]

    assert dead_after(0.0) >= 0.5
    assert dead_after(1.0) < 0.1


@pytest.mark.parametrize("problem, kw", [
    ("NaN", dict()), ("shape", dict()), ("k", dict(k=80)),
])
def test_bad_input_is_a_sparsealign_error(problem, kw, data):
    x = data[0][:512].copy()
    if problem == "NaN":
        x[3, 2] = np.nan
    if problem == "shape":
        x = x[:, 0]
    with pytest.raises(SparsealignError):
        train_sae(x, cfg(**kw))


@pytest.mark.parametrize("arch", sorted(MAX_FVU))
def test_folding_the_input_normalisation_is_exact(arch):
    sae = build_sae(SAEConfig(architecture=arch, n_latents=32, k=3), 8)
    x = torch.randn(50, 8, dtype=torch.float64) * 7 + 3
    mean, scale = x.mean(0), torch.tensor(5.0, dtype=torch.float64)
    sae = sae.double()
    with torch.no_grad():
        z, x_hat = sae.encode((x - mean) / scale), sae((x - mean) / scale) * scale + mean
        sae.fold_input_norm(mean, scale)
        torch.testing.assert_close(sae.encode(x), z)
        torch.testing.assert_close(sae(x), x_hat)


def test_normalised_training_takes_raw_inputs(data):
    x = data[0][:8192] * 7.0 + 3.0
    sae, history = train_sae(x, cfg(epochs=4, normalize_input=True))
    x_hat = sae.decode(torch.from_numpy(encode_array(sae, x))).detach().numpy()
    fvu = ((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu < 0.15 and fvu < history["fvu"][-1] + 0.02  # as good as the last steps


def test_killed_run_resumes_to_identical_weights(tmp_path, data):
    x = data[0][:3000]   # 12 batches per epoch, the last one partial
    config = cfg(architecture="batchtopk", epochs=3, log_every=5, dead_tokens=1500,
                 lr_warmup_steps=4, lr_decay_fraction=0.3)
    reference, ref_history = train_sae(x, config)

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        train_sae(x, config, checkpoint=ckpt, checkpoint_every=8, log_fn=kill_at(20))
    resumed, history = train_sae(x, config, checkpoint=ckpt, checkpoint_every=8)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    for key in ref_history:
        if key != "final":
            assert history[key] == ref_history[key], key
    again, _ = train_sae(x, config, checkpoint=ckpt)          # finished: nothing left to do
    assert torch.equal(again.W_enc, reference.W_enc)


def test_max_steps_stops_mid_epoch_and_resumes_to_the_same_weights(tmp_path, data):
    x = data[0][:3000]   # 12 batches per epoch: 30 steps end in the third epoch
    config = cfg(epochs=5, max_steps=30, log_every=5, lr_decay_fraction=0.5)
    assert config.total_steps(len(x)) == 30 and cfg(epochs=2).total_steps(len(x)) == 24
    reference, history = train_sae(x, config)
    assert history["final"]["steps"] == 30 and history["step"][-1] == 30
    assert history["lr"][-1] < 0.1 * config.lr       # the decay ends at the cap, not at 60
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        train_sae(x, config, checkpoint=ckpt, checkpoint_every=4, log_fn=kill_at(25))
    resumed, _ = train_sae(x, config, checkpoint=ckpt)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    with pytest.raises(SparsealignError, match="max_steps"):
        cfg(max_steps=0)


def test_a_short_run_checkpoints_by_time_and_resumes_exactly(tmp_path, data):
    # Far fewer steps than checkpoint_every: only the time bound (0 s: after every step)
    # writes a checkpoint before the kill, and the resumed run ends where a clean one does.
    x = data[0][:3000]
    config = cfg(epochs=2, log_every=5)
    reference, _ = train_sae(x, config)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        train_sae(x, config, checkpoint=ckpt, checkpoint_seconds=0.0, log_fn=kill_at(10))
    payload = torch.load(ckpt, weights_only=False)
    assert payload["state"]["step"] >= 9
    resumed, _ = train_sae(x, config, checkpoint=ckpt)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_checkpoint_interval_comes_from_the_environment(monkeypatch):
    from sparsealign.errors import SparsealignError
    from sparsealign.stages import CHECKPOINT_SECONDS, checkpoint_seconds

    monkeypatch.delenv("SPARSEALIGN_CHECKPOINT_SECONDS", raising=False)
    assert checkpoint_seconds() == CHECKPOINT_SECONDS
    monkeypatch.setenv("SPARSEALIGN_CHECKPOINT_SECONDS", "2.5")
    assert checkpoint_seconds() == 2.5
    monkeypatch.setenv("SPARSEALIGN_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(SparsealignError, match="SPARSEALIGN_CHECKPOINT_SECONDS: 'soon' is not a number"):
        checkpoint_seconds()


KILLED_RUN = """
import os, signal, sys, numpy as np, torch
torch.set_num_threads(1)
from sparsealign.sae import SAEConfig, train_sae
def kill(step, row):
    if step == 15:
        os.kill(os.getpid(), signal.SIGKILL)
train_sae(np.load(sys.argv[1]), SAEConfig(**eval(sys.argv[2])), checkpoint=sys.argv[3],
          checkpoint_every=4, log_fn=kill)
"""


def test_sigkilled_process_resumes_to_identical_weights(tmp_path, data):
    import subprocess
    import sys

    x = data[0][:2048]
    settings = dict(n_latents=64, k=K_TRUE, batch_size=256, epochs=3, lr=1e-2, log_every=5,
                    dead_tokens=1024)
    np.save(tmp_path / "x.npy", x)
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "x.npy"),
                           repr(settings), str(ckpt)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert torch.load(ckpt, weights_only=True)["state"]["step"] == 12
    resumed, _ = train_sae(x, SAEConfig(**settings), checkpoint=ckpt)
    reference, _ = train_sae(x, SAEConfig(**settings))
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_resume_refuses_a_different_config(tmp_path, data):
    x = data[0][:1024]
    ckpt = tmp_path / "run.ckpt"
    train_sae(x, cfg(epochs=1), checkpoint=ckpt)
    with pytest.raises(SparsealignError, match="different settings"):
        train_sae(x, cfg(epochs=1, k=4), checkpoint=ckpt)
