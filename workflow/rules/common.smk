import json
import os
import sys
from pathlib import Path

from sparsealign.config import validate_config
from sparsealign.errors import SparsealignError
from sparsealign.schema import config_sha

# The interpreter that runs Snakemake runs the jobs, unless a profile says otherwise.
PY = os.environ.get("SPARSEALIGN_PYTHON", sys.executable)
# A --configfile extends config/config.yaml; a problem is most likely in the override.
CONFIG_SOURCE = ", ".join(
    str(f) for f in workflow.configfiles if Path(f).resolve() != Path("config/config.yaml").resolve()
) or "config/config.yaml"

try:
    config.update(validate_config(config, CONFIG_SOURCE))
except SparsealignError as error:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(2)

R = config["results_dir"]
TOY = config["toy"]
REPORT = f"{R}/report.html"


wildcard_constraints:
    net=r"[^/.]+",
    exp=r"[^/.]+",
    encoder=r"sae|random",


def as_json(value):
    """Config slices travel to jobs as JSON (and Snakemake reruns a job when they change)."""
    return json.dumps(value, sort_keys=True)


def toy_pairs():
    return range(TOY["seed_pairs"])


def toy_net(hidden, seed):
    return f"m{hidden}-seed{seed}"


def start_tracking():
    from sparsealign import tracking

    tracking.start_parent(config, config_sha(config), config["mlflow_experiment"])


def stop_tracking(status):
    from sparsealign import tracking

    tracking.end_parent(status)
