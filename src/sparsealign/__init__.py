"""sparsealign: does superposition hide the alignment between neural representations?

Activations, sparse autoencoders, latents and recordings share one on-disk contract
(:mod:`sparsealign.schema`); alignment metrics live in :mod:`sparsealign.align`.
Heavy dependencies are imported inside the functions that need them so that
``import sparsealign`` stays fast.
"""

import os as _os

__version__ = "0.1.0"

# MLflow (3.x) records an installation id under ~/.config/mlflow and sends usage telemetry
# to a remote host. Off for every sparsealign process and every process it starts (the
# MLflow server, Snakemake jobs) unless the user set MLFLOW_DISABLE_TELEMETRY themselves.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
