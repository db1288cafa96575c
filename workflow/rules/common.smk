import json
import os
import sys

from sparsealign.config import DEFAULT_CONFIG, load_config
from sparsealign.errors import SparsealignError
from sparsealign.plan import Plan
from sparsealign.provenance import config_sha
from sparsealign.scheduler_timers import coalesce_reevaluation_timers
from sparsealign.stimuli.mirror import MIRROR_ENV, default_mirror_dir

# Snakemake's scheduler would wake once a second per job already run (see the module).
coalesce_reevaluation_timers()

# The interpreter that runs Snakemake runs the jobs, unless a profile says otherwise.
PY = os.environ.get("SPARSEALIGN_PYTHON", sys.executable)

# A config stands alone: the one --configfile (default config/config.yaml), read and
# validated by sparsealign (defaults filled, input paths resolved against its folder).
if len(workflow.configfiles) > 1:
    sys.stderr.write("error: --configfile: give one config file (a config stands alone)\n")
    sys.exit(2)
CONFIG_FILE = workflow.configfiles[0] if workflow.configfiles else DEFAULT_CONFIG
try:
    _config = load_config(CONFIG_FILE)
except SparsealignError as error:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(2)
config.clear()
config.update(_config)
PLAN = Plan(config)
R = PLAN.results
# Jobs find the mirror through the environment, never through params: moving it reruns nothing.
os.environ[MIRROR_ENV] = str(default_mirror_dir(config.get("data_mirror")))


def names(values):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(sorted(values)) or "(?!)"


wildcard_constraints:
    system=r"[A-Za-z][A-Za-z0-9_]*",
    member=r"[A-Za-z0-9_]+",
    exp=r"[A-Za-z][A-Za-z0-9_]*",
    encoder=r"sae|random",
    job=r"[A-Za-z0-9_.]+--[A-Za-z0-9_.]+",
    stimuli=r"[A-Za-z][A-Za-z0-9_]*",
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    hidden=r"\d+",
    seed=r"\d+",
    run=r"g\d+\.s\d+\.f\d+",
    sweep=r"[0-9a-f]{10}",


def as_json(value):
    """Config slices travel to jobs as JSON (and Snakemake reruns a job when they change)."""
    return json.dumps(value, sort_keys=True)


def read_inputs(*members):
    """Inputs of a job that reads these members' stores: their files or folders (a network's
    folder holds every layer: one forward pass extracts them all), once each."""
    return list(dict.fromkeys(i for m in members for i in m.inputs))


def wildcards_json(wildcards):
    """The job's wildcards, for its MLflow run's tags."""
    return as_json(dict(wildcards.items()))


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
