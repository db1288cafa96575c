"""torch.optim's AdamW for eager training loops, without importing ``torch._dynamo``.

torch.optim imports the torch.compile machinery (``torch._dynamo``, sympy) the first time
an optimiser is built, stepped or checkpointed: ``add_param_group``, ``zero_grad``,
``state_dict`` and ``load_state_dict`` are wrapped in ``torch._disable_dynamo``, and
``step`` in a graph-break wrapper. That import is 1.7 s of CPU per process, a third of a
short pipeline job's start-up (≈ 4.5 min of CPU over the ~160 training jobs of the default
run). The training loops here never compile, so they build the optimiser with
:func:`adamw` and step it with :func:`step`: the same update, bit for bit, through the
undecorated methods. Anything unexpected (another torch) falls back to the public calls.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import Optimizer

#: The Optimizer methods that ``torch._disable_dynamo`` wraps.
_DISABLE_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)``, whose methods do not import dynamo."""
    _mark_dynamo_disabled()
    return torch.optim.AdamW(params, **kwargs)


def step(opt: Optimizer) -> None:
    """``opt.step()`` without its dynamo graph-break, profiler and hook wrappers (the
    loops here register no optimiser hooks)."""
    fn = type(opt).step
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    if fn is type(opt).step or opt.defaults.get("differentiable"):
        opt.step()
        return
    with torch.no_grad():  # what the graph-break wrapper does for a non-differentiable step
        fn(opt)
    opt._opt_called = True  # what an LR scheduler's step counter records  # noqa: SLF001


def _mark_dynamo_disabled() -> None:
    """Record each wrapped method as its own dynamo-disabled version: the wrapper then
    calls it instead of importing dynamo to build one (the cache ``torch._disable_dynamo``
    fills on first use). Only compiling an optimiser would see a difference; nothing here
    compiles."""
    for name in _DISABLE_WRAPPED:
        inner = getattr(getattr(Optimizer, name, None), "__wrapped__", None)
        if inner is not None and not hasattr(inner, "__dynamo_disable"):
            setattr(inner, "__dynamo_disable", inner)
