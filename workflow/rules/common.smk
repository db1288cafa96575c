import json
import os
import sys
from pathlib import Path

from sparsealign.config import validate_config
from sparsealign.errors import SparsealignError
from sparsealign.provenance import config_sha
from sparsealign.stimuli.images import COWLEY_V4_SESSIONS

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
    layer=r"[^/.-]+",
    a=r"[^/.-]+",
    b=r"[^/.-]+",
    session=r"\d+",
    hidden=r"\d+",
    pair=r"\d+",
    seed=r"\d+",


def as_json(value):
    """Config slices travel to jobs as JSON (and Snakemake reruns a job when they change)."""
    return json.dumps(value, sort_keys=True)


def toy_pairs():
    return range(TOY["seed_pairs"])


def toy_net(hidden, seed):
    return f"m{hidden}-seed{seed}"


def start_tracking():
    """onstart: sweep what killed jobs left, verify raw inputs, check MLflow, open the parent run.

    A problem is one line on stderr and exit status 2, before any job starts.
    """
    from sparsealign import launcher, tracking

    try:
        raw_md5 = launcher.prepare_workspace(R, local=workflow.local_exec)
        tracking.start_parent(config, config_sha(config), config["mlflow_experiment"], raw_md5)
    except SparsealignError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def stop_tracking(status):
    from sparsealign import tracking

    try:
        tracking.end_parent(status)
    except Exception as error:  # the outputs stand; the next start reaps the run
        sys.stderr.write(f"warning: could not close the MLflow parent run ({error})\n")


V4 = config["v4"]
DNN = config["dnn"]
V4_SESSIONS = sorted(set(V4["recording_sessions"]))
# Raw recordings are converted once, for every session, whatever the experiment: they
# live under data/raw/ (a DVC output of the pipeline stage), shared by every config.
RECORDINGS = "data/raw/cowley2023_v4"
# Only session 210325 has its raw repeats in the mirror: it alone gets a noise ceiling.
REPEAT_SESSIONS = {"210325"}


# SPARSEALIGN_DATA_MIRROR overrides the config (the data's location is not science).
MIRROR = os.path.abspath(os.environ.get("SPARSEALIGN_DATA_MIRROR", config["data_mirror"]))


def image_params(section):
    return as_json({"mirror": MIRROR, "layers": section.get("layers"), **section["images"]})


def dnn_pairs():
    models = DNN["models"]
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
