import os

import numpy as np
import pytest

# Unit tests never talk to MLflow unless they ask for it (the e2e test sets its own URI).
os.environ.setdefault("SPARSEALIGN_TRACKING", "off")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def make_store():
    from sparsealign import schema

    def build(values, kind="neurons", stimulus_prefix="s", **attrs):
        values = np.asarray(values)
        ids = [f"{stimulus_prefix}{i:05d}" for i in range(values.shape[0])]
        units = [f"u/{i:05d}" for i in range(values.shape[1])]
        return schema.make_store(values, ids, units, source="test", layer="x", kind=kind,
                                 config={}, attrs=attrs)

    return build
