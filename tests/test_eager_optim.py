"""sparsealign.eager_optim: torch's AdamW update, bit for bit, without importing dynamo."""

import subprocess
import sys
import warnings

import pytest
import torch

from sparsealign import eager_optim


def _train(build, stepper, fused):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    opt = build(model.parameters(), lr=1e-2, weight_decay=1e-3, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    data = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(16, 8, generator=data)
        loss = (model(x) ** 2).mean()
        loss.backward()
        stepper(opt)
        sched.step()
        opt.zero_grad(set_to_none=True)
    return model.state_dict(), opt.state_dict()


@pytest.mark.parametrize("fused", [True, False])
def test_same_update_as_torch_and_no_scheduler_warning(fused):
    reference = _train(torch.optim.AdamW, lambda opt: opt.step(), fused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        ours = _train(eager_optim.adamw, eager_optim.step, fused)
    for key, value in reference[0].items():
        assert torch.equal(ours[0][key], value), key
    for slot, state in reference[1]["state"].items():
        for key, value in state.items():
            assert torch.equal(ours[1]["state"][slot][key], value), (slot, key)


def test_training_and_checkpointing_never_import_dynamo():
    code = """
import sys, torch
from sparsealign import eager_optim
model = torch.nn.Linear(4, 2)
opt = eager_optim.adamw(model.parameters(), lr=1e-3, fused=True)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
model(torch.ones(3, 4)).sum().backward()
eager_optim.step(opt)
sched.step()
opt.zero_grad(set_to_none=True)
opt.load_state_dict(opt.state_dict())
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
