"""``python -m sparsealign <stage> …``: what every Snakemake rule calls, usable by hand.

Each stage reads its inputs, does one thing, writes its outputs atomically and records
itself as a child MLflow run. A user mistake ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sparsealign import stages
from sparsealign.errors import SparsealignError, fail


def _json(text: str, flag: str = "--params"):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(flag, f"not valid JSON ({exc})") from None


def _set_threads(threads: int) -> None:
    """Every thread pool of the job to ``threads``: torch's, and the BLAS and OpenMP pools
    of NumPy and SciPy (read when they load, which is after this), unless the user set
    them. Two 1-thread jobs on 2 cores must not start 2 BLAS threads each.

    torch sizes its pool from OMP_NUM_THREADS when it loads, so torch is imported here
    only when the user's OMP_NUM_THREADS differs: a job that never needs torch (scoring,
    summaries) does not pay its 1.4 s import. POT, which would import torch for a backend
    these jobs never use (they hand it NumPy arrays), is told not to.
    """
    threads = max(1, threads)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
    if os.environ["OMP_NUM_THREADS"] != str(threads):
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- stages
# Each parses its flags, validates --params against a schema definition (filling its
# defaults) and calls one function of sparsealign.stages.
def _params(args, definition: str) -> dict:
    from sparsealign.config import validate_section

    return validate_section(_json(args.params) if args.params else {}, definition)


def _stage_toy_data(args, job):
    stages.toy_data(_params(args, "stimuli_toy_features"), args.seed, args.out, job)


def _stage_toy_model(args, job):
    stages.toy_model(_params(args, "toy_training"), args.hidden, args.seed, args.data_seed,
                     args.features, args.model_out, args.out, job)


def _stimuli_params(params: dict, images, ids_csv) -> dict:
    """A stimuli entry of a job, validated with its paths (which come as flags)."""
    paths = {k: v for k, v in (("path", images), ("ids_csv", ids_csv)) if v}
    stimuli = _entry({**params, **paths}, "stimuli")
    return {k: v for k, v in stimuli.items() if k not in paths}


def _stage_extract(args, job):
    params = _params(args, "extract_job")
    params["stimuli"] = _stimuli_params(params["stimuli"], args.images, args.ids_csv)
    if "training_rows" in params:
        rows = params["training_rows"]
        rows["stimuli"] = _stimuli_params(rows["stimuli"], args.training_images,
                                          args.training_ids_csv)
    stages.extract(params, args.out, job, images=args.images, ids_csv=args.ids_csv,
                   training_images=args.training_images, training_ids_csv=args.training_ids_csv)


def _stage_import_dataset(args, job):
    stages.import_dataset(args.dataset, args.out, job)


def _stage_import_recording(args, job):
    params = _entry({"kind": "recording", **(_json(args.params) if args.params else {}),
                     "path": args.path}, "systems")
    stages.import_recording(params, args.path, args.out, job, ids=args.ids)


def _stage_train_sae(args, job):
    stages.train_sae(_params(args, "sae"), args.activations, args.seed, args.sae_out,
                     args.random_out, args.history_out, job, rows=args.rows,
                     heldout=args.heldout, sweep=args.sweep, latents_out=args.latents_out,
                     random_latents_out=args.random_latents_out, fraction=args.fraction)


def _stage_sae_sweep(args, job):
    params = _params(args, "sae")
    if not params.get("sweep"):
        raise fail("--params", "no sweep block", "sweep: {k: [...], expansion: [...]}")
    stages.sae_sweep(params, args.rows, args.out, job)


def _stage_latents(args, job):
    stages.latents(_params(args, "sae"), args.activations, args.sae, args.encoder, args.out, job,
                   heldout=args.heldout)


def _representations(args, prefix: str) -> dict:
    return {"neurons": getattr(args, f"{prefix}neurons"), "sae": getattr(args, f"{prefix}sae"),
            "random": getattr(args, f"{prefix}random")}


def _batch(args, flag: str, keys: set, single_flags: tuple):
    """The JSON list of a batch flag (``--pairs``, ``--targets``), or None without it."""
    text = getattr(args, flag.lstrip("-"))
    if text is None:
        missing = [f for f in single_flags if not getattr(args, f.lstrip("-").replace("-", "_"))]
        if missing:
            raise fail(args.command, f"{', '.join(missing)} missing", f"them, or {flag}")
        return None
    given = [f for f in single_flags if getattr(args, f.lstrip("-").replace("-", "_"))]
    if given:
        raise fail(flag, f"given with {', '.join(given)}", "one or the other")
    entries = _json(text, flag)
    if not (isinstance(entries, list) and entries
            and all(isinstance(e, dict) and keys <= e.keys() for e in entries)):
        raise fail(flag, f"not a list of objects with {', '.join(sorted(keys))}",
                   f"what the workflow's {args.command.replace('-', '_')} rule writes")
    return entries


def _stage_align_pair(args, job):
    params = _params(args, "alignment")
    pairs = _batch(args, "--pairs", {"a", "b"}, ("--a-neurons", "--a-sae", "--a-random",
                                                 "--b-neurons", "--b-sae", "--b-random"))
    if pairs:
        stages.align_pairs(params, pairs, args.out, job)
        return
    stages.align_pair(params, _representations(args, "a_"), _representations(args, "b_"),
                      args.out, job, labels=_json(args.labels) if args.labels else {},
                      features=args.features)


def _stage_align_recording(args, job):
    params = _params(args, "alignment")
    targets = _batch(args, "--targets", {"source", "recording"},
                     ("--neurons", "--sae", "--random", "--recording"))
    if targets:
        stages.align_recordings(params, targets, args.out, job)
        return
    stages.align_recording(params, _representations(args, ""), args.recording, args.out, job,
                           labels=_json(args.labels) if args.labels else {},
                           target_label=args.target_label)


def _stage_summarise(args, job):
    stages.summarise({"panel": args.panel, "title": args.title}, args.scores, args.table_out,
                     args.summary_out, args.figure_out, job, histories=args.histories,
                     quality_out=args.quality_out)


def _stage_toy_theory(args, job):
    stages.toy_theory(_json(args.params) if args.params else {}, args.models, args.activations,
                      [_json(label) for label in args.labels], args.table_out, args.figure_out, job)


def _stage_write_report(args, job):
    stages.write_report(_json(args.params) if args.params else {}, args.summaries, args.figures, args.histories,
                        args.out, job)


def _entry(entry: dict, section: str) -> dict:
    """A stimuli/systems entry, validated against the definition of its kind."""
    from sparsealign.config import validate_section

    kind = entry.get("kind")
    try:
        return validate_section(entry, f"{section}_{kind}")
    except KeyError:
        raise fail("--params", f"unknown {section} kind {kind!r}") from None


def check(args) -> int:
    """Validate a config (exactly what `run` uses), the files it needs and any stores named."""
    from sparsealign.preflight import config_problems

    problems = config_problems(args.config) + _store_problems(args.stores)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.config}: ok" + (f"; {len(args.stores)} stores ok" if args.stores else ""))
    return 2 if problems else 0


def _store_problems(paths) -> list[str]:
    from sparsealign import schema

    problems = []
    for path in paths:
        try:
            schema.open_store(path)
        except SparsealignError as exc:
            problems.append(str(exc))
    return problems


# --------------------------------------------------------------------------- user commands
def _snakemake(args, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "snakemake", "--configfile", args.config]
    profile = getattr(args, "profile", None)
    if profile:
        command += ["--workflow-profile", f"workflow/profiles/{profile}"]
    if profile == "kubernetes":
        # The executor copies the environment into a secret before `onstart` runs, so the
        # launcher opens the MLflow parent run first (see docs/cluster.md).
        command = [sys.executable, "-m", "sparsealign.launcher", "--", *command]
    return command + extra


PUBLISH = ("to publish this result: git add dvc.lock && git commit -m 'results' "
           "&& dvc push && git push")


def run_pipeline(args) -> int:
    """Check the config and every file it needs, run the pipeline, say where the report is.

    A run killed earlier is recovered (its stale lock cleared, incomplete outputs redone);
    a live concurrent run in this directory is refused (see ``launcher.run_snakemake``).
    """
    from sparsealign.config import load_config
    from sparsealign.launcher import DRY_FLAGS, run_snakemake
    from sparsealign.preflight import config_problems
    from sparsealign.tracking import parent_run_in_file

    problems = config_problems(args.config)
    if problems:
        raise SparsealignError(problems[0])
    config = load_config(args.config)
    cores = [] if any(a.startswith(("--cores", "-c", "--jobs", "-j")) for a in args.snakemake_args) \
        else ["--cores", "all"]
    dry = DRY_FLAGS & set(args.snakemake_args)
    code = 0 if dry else _adopt_pulled_outputs(args, config)
    previous_parent = parent_run_in_file()
    code = code or run_snakemake(_snakemake(args, cores + args.snakemake_args))
    if code == 0 and not dry:
        _print_costs(previous_parent)
        print(PUBLISH)
        print(f"report: {Path(config['results_dir'], 'report.html').resolve()}")
    return code


def _print_costs(previous_parent: str | None) -> None:
    """Each stage's share of this invocation's job time (from MLflow; silent without it).

    Silent too when this invocation ran no job: only then is the parent run in the file
    still ``previous_parent``, an earlier invocation's (``onstart`` writes a new one).
    """
    from sparsealign.tracking import parent_run_in_file
    from sparsealign.tracking.costs import format_costs, stage_costs

    run_id = parent_run_in_file()
    if run_id is None or run_id == previous_parent:
        return
    try:
        text = format_costs(stage_costs(run_id))
    except Exception as exc:  # the run succeeded: a tracking hiccup must not fail it
        text = f"[sparsealign] stage costs unavailable ({type(exc).__name__})"
    if text:
        print(text, flush=True)


def _adopt_pulled_outputs(args, config) -> int:
    """Outputs in a checkout where Snakemake never ran (a fresh clone after `dvc pull`) are
    the results DVC versioned: mark them up to date (`snakemake --touch`) rather than let
    their arbitrary modification times rerun the pipeline.

    Only when there is no ``.snakemake`` at all: after a killed run it exists (locks,
    incomplete markers), and recovery, not adoption, is what the outputs need.
    """
    from sparsealign.launcher import run_snakemake

    if Path(".snakemake").exists() or not Path(config["results_dir"]).exists():
        return 0
    print(f"[sparsealign] {config['results_dir']} was made elsewhere (pulled by DVC?): "
          "marking its outputs up to date", file=sys.stderr, flush=True)
    return run_snakemake(_snakemake(args, ["--touch", "--no-hooks", "--cores", "1", "--quiet"]))


def status(args) -> int:
    """What is done and what would run (a Snakemake dry run, summarised)."""
    import subprocess

    # Outputs a killed run left incomplete are what the next `run` recomputes: list them too.
    proc = subprocess.run(_snakemake(args, ["--dry-run", "--rerun-incomplete", "--quiet", "rules",
                                            "host", "reason"] + args.snakemake_args),
                          capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(text)
        return proc.returncode
    if "Job stats:" not in text:
        print(f"{args.config}: nothing to do, every output is up to date")
        return 0
    table = text[text.index("Job stats:"):].split("\n\n")[0]
    print(f"{args.config}: jobs that would run\n{table}")
    return 0


def rebuild_report(args) -> int:
    """Rebuild the summaries, figures and HTML report from the existing score tables."""
    import subprocess

    return subprocess.call(_snakemake(args, ["--cores", "1", "--forcerun", "summarise", "report",
                                             "--", "report"]))


def ui(args) -> int:
    """Start the MLflow UI on loopback over the project's store; Ctrl-C stops it and its workers."""
    from sparsealign.ui import serve

    return serve(args.port, args.backend_store_uri)


# --------------------------------------------------------------------------- plumbing
STAGES = {
    "toy-data": _stage_toy_data, "toy-model": _stage_toy_model, "extract": _stage_extract,
    "import-dataset": _stage_import_dataset, "import-recording": _stage_import_recording,
    "train-sae": _stage_train_sae, "sae-sweep": _stage_sae_sweep, "latents": _stage_latents, "align-pair": _stage_align_pair,
    "align-recording": _stage_align_recording, "toy-theory": _stage_toy_theory,
    "summarise": _stage_summarise,
    "write-report": _stage_write_report,
}
PASS_THROUGH = ("run", "status")  # commands whose unknown arguments go to Snakemake
COMMANDS = {"run": run_pipeline, "status": status, "report": rebuild_report, "ui": ui, "check": check}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsealign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name, help_text, params=None):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--rule", default=name, help="MLflow: the Snakemake rule (default: stage name)")
        p.add_argument("--wildcards", default="{}", help="MLflow: the job's wildcards as JSON")
        if params:
            p.add_argument("--params", help=f"{params}, JSON (schema defaults fill what is missing)")
        return p

    p = stage("toy-data", "held-out feature vectors of one data seed", "a toy_features stimuli entry")
    p.add_argument("--seed", type=int, required=True, help="data seed")
    p.add_argument("--out", required=True)

    p = stage("toy-model", "train one toy model, store its held-out activations",
              "toy_training {n_features, feature_probability, steps, batch_size, lr}")
    p.add_argument("--features", required=True, help="the data seed's feature store")
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="initialisation seed")
    p.add_argument("--data-seed", type=int, required=True, help="data-stream seed")
    p.add_argument("--model-out", required=True)
    p.add_argument("--out", required=True)

    p = stage("extract", "activations of a network's layers on a stimulus set (+ SAE training rows)",
              "{model, layers: {name: module path or null}, reduction, batch_size, stimuli: {kind, …},"
              " training_rows: {stimuli, positions, flips, seed, dtype}}")
    p.add_argument("--images", help="image_folder stimuli: the folder or zip")
    p.add_argument("--ids-csv", help="image_folder stimuli: CSV of file,stimulus_id")
    p.add_argument("--training-images", help="training rows' image_folder stimuli: the folder or zip")
    p.add_argument("--training-ids-csv", help="training rows' image_folder stimuli: ids CSV")
    p.add_argument("--out", required=True)

    p = stage("import-dataset", "verify a named dataset of the data mirror and convert all of it")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="folder for the stores")

    p = stage("import-recording", "a recording file (npz/npy, NWB, NetCDF/Zarr) → a store",
              "a recording system entry without path/ids (format, key, layout, …)")
    p.add_argument("--path", required=True)
    p.add_argument("--ids", help="npz/npy: text file of stimulus ids")
    p.add_argument("--out", required=True)

    heldout_help = "a store whose stimuli the SAE never trains on and encodes (repeatable)"
    p = stage("train-sae", "train an SAE (and its random control) on activations or training rows",
              "an experiment's sae block")
    p.add_argument("--activations", required=True, help="the member's scoring store")
    p.add_argument("--rows", help="a training-rows store (default: train on the scoring store)")
    p.add_argument("--heldout", action="append", default=[], help=heldout_help)
    p.add_argument("--sweep", help="a sae-sweep file: its chosen k and expansion")
    p.add_argument("--seed", type=int, default=0, help="the SAE's seed")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="train on this seeded fraction of the training rows")
    p.add_argument("--sae-out", required=True)
    p.add_argument("--random-out", required=True)
    p.add_argument("--history-out", required=True)
    p.add_argument("--latents-out", help="encode the scored stimuli through the SAE here")
    p.add_argument("--random-latents-out", help="… and through the random control here")

    p = stage("sae-sweep", "choose k and expansion by reconstruction on held-out training rows",
              "an experiment's sae block, with sweep")
    p.add_argument("--rows", required=True, help="a training-rows store")
    p.add_argument("--out", required=True)

    p = stage("latents", "encode an activations store through an SAE", "an experiment's sae block")
    p.add_argument("--activations", required=True)
    p.add_argument("--heldout", action="append", default=[], help="encode only these stores' stimuli")
    p.add_argument("--sae", required=True)
    p.add_argument("--encoder", choices=("sae", "random"), required=True)
    p.add_argument("--out", required=True)

    def representation_flags(p, prefix: str, system: str):
        """One comparison's stores by hand (the workflow sends --pairs/--targets instead)."""
        p.add_argument(f"--{prefix}neurons", help=f"{system}: the neurons store")
        p.add_argument(f"--{prefix}sae", action="append",
                       help=f"{system}: SAE latents store of one seed (repeatable)")
        p.add_argument(f"--{prefix}random", action="append",
                       help=f"{system}: random-SAE latents of the same seed (repeatable, same order)")

    p = stage("align-pair", "score neurons/SAE/random-SAE comparisons between two systems",
              "an experiment's alignment block")
    representation_flags(p, "a-", "system A")
    representation_flags(p, "b-", "system B")
    p.add_argument("--features", help="ground-truth feature store (toy experiments)")
    p.add_argument("--labels", help="extra columns for every row, JSON")
    p.add_argument("--pairs", help="instead of the flags above, several pairs scored into one "
                   "table: JSON list of {a: {neurons, sae: [...], random: [...]}, b: {…}, "
                   "labels, features, name}")
    p.add_argument("--out", required=True)

    p = stage("align-recording", "score neurons/SAE/random-SAE latents of a layer against a recording",
              "an experiment's alignment block")
    representation_flags(p, "", "the source")
    p.add_argument("--recording", help="the recording store (trials beside it: "
                   "<name>_repeats.zarr add the noise ceiling)")
    p.add_argument("--target-label", default="target", help="name of the target in comparisons")
    p.add_argument("--labels", help="extra columns for every row, JSON")
    p.add_argument("--targets", help="instead of the flags above, several recordings scored into "
                   "one table: JSON list of {source: {neurons, sae: [...], random: [...]}, "
                   "recording, target_label, labels, name}")
    p.add_argument("--out", required=True)

    p = stage("toy-theory", "the paper's theory on toy model pairs: table and figure",
              "{n_features, feature_probability, threshold, n_samples, seed}")
    p.add_argument("--models", nargs="+", required=True, help="toy model files (.pt)")
    p.add_argument("--activations", nargs="+", required=True, help="their neuron stores, same order")
    p.add_argument("--labels", nargs="+", required=True, help="JSON {hidden, pair, seed} per model")
    p.add_argument("--table-out", required=True)
    p.add_argument("--figure-out", required=True)

    p = stage("summarise", "results table, summary over comparisons, paper-style figure")
    p.add_argument("--scores", nargs="+", required=True)
    p.add_argument("--panel", default="layer", help="column that makes the figure's panels")
    p.add_argument("--title", default="")
    p.add_argument("--table-out", required=True)
    p.add_argument("--summary-out", required=True)
    p.add_argument("--figure-out", required=True)
    p.add_argument("--histories", nargs="*", default=[], help="the experiment's SAE history files")
    p.add_argument("--quality-out", help="table of every SAE's held-out FVU, L0, dead fraction")

    p = stage("write-report", "the self-contained HTML report (what the report rule calls)",
              "{experiments: {name: {description, panel}}, mirror_files, config_sha}")
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--figures", nargs="+", required=True)
    p.add_argument("--histories", nargs="*", default=[])
    p.add_argument("--out", required=True)

    def command(name, help_text, config_default=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config_default:
            p.add_argument("--config", default="config/config.yaml", help="config file")
        return p

    p = command("run", "run the pipeline; other arguments go to Snakemake (e.g. --cores 2 -n)")
    p.add_argument("--profile", help="a folder of workflow/profiles/ (local, slurm, kubernetes)")
    p = command("status", "what is done and what would run; other arguments go to Snakemake")
    p.add_argument("--profile", help="a folder of workflow/profiles/")
    command("report", "rebuild the report from the results tables")
    p = command("ui", "start the MLflow UI on 127.0.0.1 over the project's runs", config_default=False)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", help="default: $MLFLOW_TRACKING_URI or the project's SQLite store")
    p = command("check", "validate a config, the data it needs and stores (one line per problem)",
                config_default=False)
    p.add_argument("config")
    p.add_argument("stores", nargs="*", help="recording / activation / latent stores to validate")
    return parser


def _inputs(args) -> list[str]:
    names = ("features", "activations", "models", "rows", "heldout", "sweep", "sae", "a_neurons", "a_sae",
             "a_random", "b_neurons", "b_sae", "b_random", "neurons", "random", "recording", "scores", "summaries", "figures", "histories",
             "images", "ids_csv", "training_images", "training_ids_csv", "path", "ids")
    paths = []
    for name in names:
        value = getattr(args, name, None)
        if value:
            paths += value if isinstance(value, list) else [value]
    return [p for p in paths if Path(p).exists()]


def _outputs(args) -> list[str]:
    return [value for name, value in sorted(vars(args).items())
            if (name == "out" or name.endswith("_out")) and value]


def run(argv=None) -> int:
    from sparsealign import tracking
    from sparsealign.provenance import config_sha

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in PASS_THROUGH:
        args.snakemake_args = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in COMMANDS:
        return COMMANDS[args.command](args)
    _set_threads(args.threads)
    params = _json(args.params) if getattr(args, "params", None) else {}
    with tracking.job_run(args.rule, _json(args.wildcards), params, _inputs(args),
                          config_sha(params)) as job:
        STAGES[args.command](args, job)
        job.outputs(_outputs(args))
    return 0


def main(argv=None) -> int:
    try:
        code = run(argv)
    except SparsealignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    if code:
        # A store that failed mid-read (here or in `check`) can leave zarr's concurrent reads
        # pending; their "Task was destroyed but it is pending!" at exit would add lines to
        # the one error line.
        logging.getLogger("asyncio").disabled = True
    return code


if __name__ == "__main__":
    sys.exit(main())
