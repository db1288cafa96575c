"""``python -m sparsealign <stage> …``: what every Snakemake rule calls, usable by hand.

Each stage reads its inputs, does one thing, writes its outputs atomically and records
itself as a child MLflow run. A user mistake ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sparsealign.errors import SparsealignError, fail
from sparsealign.progress import Progress


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail("--params", f"not valid JSON ({exc})") from None


def _log(message: str) -> None:
    print(f"[sparsealign] {message}", file=sys.stderr, flush=True)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


# --------------------------------------------------------------------------- stages
def toy_data(args, job) -> None:
    """Held-out feature vectors of one seed pair: the stimuli of the toy experiment."""
    from sparsealign import schema
    from sparsealign.models import toy

    params = _json(args.params)
    cfg = _toy_config(params)
    features = toy.heldout_features(args.pair, params["n_samples"], cfg)
    ids = [f"toy{args.pair}-{i:07d}" for i in range(features.shape[0])]
    units = [f"feature/{i:05d}" for i in range(features.shape[1])]
    ds = schema.make_store(features, ids, units, source=f"toy-pair{args.pair}", layer="features",
                           kind="ground_truth", config=params)
    schema.save_store(ds, args.out)
    job.metrics({"active_fraction": float((features > 0).mean())})
    _log(f"wrote {args.out} ({features.shape[0]} stimuli × {features.shape[1]} features)")


def _toy_config(params: dict):
    from sparsealign.models.toy import ToyConfig

    return ToyConfig(n_features=params["n_features"], feature_probability=params["feature_probability"],
                     steps=params["steps"], batch_size=params["batch_size"], lr=params["lr"])


def toy_model(args, job) -> None:
    """Train one toy model on its pair's data stream; store its neurons' held-out responses."""
    import torch

    from sparsealign import schema
    from sparsealign.models import toy

    params = _json(args.params)
    cfg = _toy_config(params)
    features = schema.open_store(args.features)
    with Progress(f"toy model m={args.hidden} seed={args.seed}", cfg.steps) as bar:
        model, curve = toy.train_toy_model(
            args.hidden, args.seed, args.pair, cfg,
            progress=lambda step, loss: bar.update(step - bar.done, loss=loss))
    hidden = toy.hidden_activations(model, schema.responses(features).astype("float32"))
    units = [f"hidden/{i:05d}" for i in range(hidden.shape[1])]
    ds = schema.make_store(hidden, features["stimulus"].values, units,
                           source=f"toy-m{args.hidden}-seed{args.seed}", layer="hidden",
                           kind="neurons", config=params,
                           attrs={"init_seed": args.seed, "data_seed": args.pair})
    Path(args.model_out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{args.model_out}.tmp")
    torch.save({"state_dict": model.state_dict(), "n_hidden": args.hidden, "config": params}, tmp)
    schema.save_store(ds, args.out)
    tmp.replace(args.model_out)
    job.curves({"toy_loss": list(zip(curve["step"], curve["loss"]))})
    job.metrics({"final_loss": curve["loss"][-1],
                 "dead_neurons": int((hidden.max(axis=0) <= 0).sum())})


def train_sae(args, job) -> None:
    """Train the SAE on the training split of a store, plus its untrained random control."""
    from sparsealign import schema
    from sparsealign.latents import training_split
    from sparsealign.sae import SAEConfig, build_sae, save_sae, train_sae as fit

    params = _json(args.params)
    activations = schema.open_store(args.activations)
    train_ids, _ = training_split(activations["stimulus"].values, params["train_fraction"])
    x = schema.responses(activations.sel(stimulus=train_ids)).astype("float32")
    cfg = _sae_config(_with_width(params, x.shape[1]), SAEConfig)
    _log(f"training {cfg.architecture} SAE ({cfg.n_latents} latents, k={cfg.k}) on "
         f"{x.shape[0]} × {x.shape[1]} activations of {args.activations}")
    checkpoint = _checkpoint_for(args.sae_out, params, args.activations)
    total = math.ceil(x.shape[0] / cfg.batch_size) * cfg.epochs
    with Progress(f"SAE {args.activations}", total) as bar:
        sae, history = fit(x, cfg, checkpoint=checkpoint, log_fn=lambda step, row: bar.update(
            step - bar.done, loss=row["loss"], fvu=row["fvu"], l0=row["l0"]))
    random_cfg = _sae_config({**_with_width(params, x.shape[1]), "seed": params["random_seed"]}, SAEConfig)
    random_sae = build_sae(random_cfg, x.shape[1])
    meta = {"activations": str(args.activations), "n_train": int(x.shape[0])}
    curves = {k: v for k, v in history.items() if isinstance(v, list) and k != "step"}
    final = {k: v[-1] for k, v in curves.items() if v}
    final.update(history.get("final", {}))
    # Wall-clock figures go to MLflow only, so the history file is byte-stable.
    timing = {k: final.pop(k) for k in TIMING_KEYS if k in final}
    history_out = {"config": params, "n_train": int(x.shape[0]), "curves": {
        "step": history["step"], **curves}, "final": final}
    Path(args.history_out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{args.history_out}.tmp")
    tmp.write_text(json.dumps(history_out, indent=1))
    save_sae(sae, args.sae_out, meta)
    save_sae(random_sae, args.random_out, {**meta, "trained": False})
    tmp.replace(args.history_out)
    checkpoint.unlink(missing_ok=True)
    Path(f"{checkpoint}.key").unlink(missing_ok=True)
    job.curves({f"sae_{name}": list(zip(history["step"], values)) for name, values in curves.items()})
    job.metrics({f"final_{k}": v for k, v in {**final, **timing}.items() if isinstance(v, (int, float))})
    _log("final " + ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, (int, float))))


TIMING_KEYS = ("seconds", "tokens_per_second", "data_wait_seconds")


def _checkpoint_for(sae_out, params: dict, activations) -> Path:
    """The SAE's checkpoint: it survives a killed job, and the rerun resumes from it.

    A sidecar ``.key`` (config hash + activations md5) guards it: a checkpoint left by a
    different config or different activations is discarded, never resumed.
    """
    from sparsealign.schema import config_sha
    from sparsealign.tracking import path_md5

    checkpoint, key_file = Path(f"{sae_out}.ckpt"), Path(f"{sae_out}.ckpt.key")
    key = f"{config_sha(params)} {path_md5(activations)}"
    if checkpoint.exists():
        if key_file.exists() and key_file.read_text() == key:
            _log(f"resuming from {checkpoint}")
        else:
            _log(f"discarding {checkpoint}: it was made from another config or other activations")
            checkpoint.unlink()
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    return checkpoint


def _with_width(params: dict, d_in: int) -> dict:
    """``expansion`` (latents per input unit), when set, fixes ``n_latents`` for this layer."""
    if params.get("expansion"):
        return {**params, "n_latents": int(round(params["expansion"] * d_in))}
    return params


def _sae_config(params: dict, config_class):
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in params.items() if k in fields})


def latents(args, job) -> None:
    """Encode the evaluation split of an activations store through a trained or random SAE."""
    from sparsealign import schema
    from sparsealign.latents import encode_store, training_split
    from sparsealign.sae import load_sae

    params = _json(args.params)
    activations = schema.open_store(args.activations)
    _, eval_ids = training_split(activations["stimulus"].values, params["train_fraction"])
    kind = "sae_latents" if args.encoder == "sae" else "random_sae_latents"
    encode_store(load_sae(args.sae), activations, eval_ids, args.out, kind=kind, config=params,
                 sparse=params.get("sparse_latents", False))
    z = schema.open_store(args.out)["responses"].values
    job.metrics({"l0": float((z != 0).sum(axis=1).mean()),
                 "dead_fraction": float((z.max(axis=0) <= 0).mean())})
    _log(f"wrote {args.out} ({z.shape[0]} stimuli × {z.shape[1]} latents)")


def align_pair(args, job) -> None:
    """Score the comparison grid between two systems (and ground-truth recovery, if given)."""
    import pandas as pd

    from sparsealign import comparisons, schema

    params = _json(args.params)
    systems = {}
    for label, paths in (("A", args.a), ("B", args.b)):
        stores = {name: (path, schema.open_store(path)) for name, path in zip(("neurons", "sae", "random"), paths)}
        systems[label] = stores
    # Everything is scored on the latents' stimuli (the SAE's held-out split), by id.
    reference_path, reference = systems["A"]["sae"]
    matched = {}
    for label, stores in systems.items():
        matched[label] = {}
        for name, (path, ds) in stores.items():
            _, ds = schema.match_stimuli(reference, ds, reference_path, path, mode="intersect")
            if ds.sizes["stimulus"] != reference.sizes["stimulus"]:
                raise fail(path, f"holds {ds.sizes['stimulus']} of the "
                           f"{reference.sizes['stimulus']} evaluation stimuli of {reference_path}",
                           "every evaluation stimulus")
            matched[label][name] = schema.responses(ds)
    total = len(comparisons.COMPARISONS) * len(params["metrics"])
    with Progress(f"alignment {args.out}", total) as bar:
        rows = comparisons.score_comparisons(
            matched["A"], matched["B"], params["metrics"], params["n_folds"], params["seed"],
            params["options"], progress=lambda c, m, value: bar.update(1, **{m: value}))
    if args.features:
        _, features = schema.match_stimuli(reference, schema.open_store(args.features),
                                           reference_path, args.features, mode="intersect")
        rows += comparisons.recovery_rows(schema.responses(features), matched)
    labels = _json(args.labels) if args.labels else {}
    table = pd.DataFrame([{**labels, **row} for row in rows])
    _write_csv(table, args.out)
    both = table[table["direction"] == "both"]
    # MLflow metric names allow no arrows: "SAE→SAE" is logged as "SAE_to_SAE".
    job.metrics({f"{r.metric}.{r.comparison.replace('→', '_to_')}": r.mean for r in both.itertuples()})
    _log(f"wrote {args.out} ({len(table)} rows)")


def import_recordings(args, job) -> None:
    """Verify a named dataset against the mirror's checksums and convert it to stores."""
    from sparsealign.recordings.datasets import import_dataset

    params = _json(args.params)
    options = {"sessions": [str(s) for s in params["sessions"]]} if args.dataset == "cowley2023_v4" else {}
    paths = import_dataset(args.dataset, params["mirror"], args.out, config=params, **options)
    job.metrics({"stores": len(paths)})
    _log(f"imported {args.dataset}: {len(paths)} stores under {args.out}")


def extract(args, job) -> None:
    """Activations of a registered model's layers on the V4 images (one store per layer)."""
    from sparsealign import schema
    from sparsealign.extract import extract_registered_model
    from sparsealign.stimuli.images import load_cowley_v4_images

    params = _json(args.params)
    ids, images = load_cowley_v4_images(params["mirror"], sessions=[str(s) for s in params["sessions"]])
    if params.get("max_stimuli"):
        ids, images = ids[:params["max_stimuli"]], images[:params["max_stimuli"]]
    _log(f"extracting {args.model} {params['layers']} on {len(ids)} images")
    stores = extract_registered_model(args.model, ids, images, layers=params["layers"],
                                      reduction=params["reduction"], batch_size=params["batch_size"],
                                      config=params)
    for layer, ds in stores.items():
        schema.save_store(ds, Path(args.out_dir) / f"{args.model}-{layer}.zarr")
    job.metrics({"stimuli": len(ids)})


def align_brain(args, job) -> None:
    """Neurons, SAE latents and random-SAE latents of one layer → one recording session."""
    import pandas as pd

    from sparsealign import comparisons, schema

    params = _json(args.params)
    target_path = args.recording
    target = schema.open_store(target_path)
    system = {}
    for name, path in zip(("neurons", "sae", "random"), args.source):
        ds, target_matched = schema.match_stimuli(schema.open_store(path), target, path, target_path,
                                                  mode="intersect")
        system[name] = schema.responses(ds)
    target_values = schema.responses(target_matched)
    repeats = None
    if args.repeats:
        _, trials = schema.match_stimuli(target_matched, schema.open_store(args.repeats),
                                         target_path, args.repeats, mode="intersect")
        if trials.sizes["stimulus"] != target_matched.sizes["stimulus"]:
            raise fail(args.repeats, f"lacks {target_matched.sizes['stimulus'] - trials.sizes['stimulus']}"
                       f" of the scored stimuli of {target_path}", "trials for every scored stimulus")
        repeats = trials.sel(unit=target_matched["unit"].values)["responses"].values
    with Progress(f"alignment {args.out}", len(system) * len(params["metrics"])) as bar:
        rows = comparisons.score_against_target(
            system, target_values, args.target_label, params["metrics"], params["n_folds"],
            params["seed"], params["options"], target_repeats=repeats,
            progress=lambda c, m, value: bar.update(1, **{m: value}))
    labels = _json(args.labels) if args.labels else {}
    table = pd.DataFrame([{**labels, "n_stimuli": target_values.shape[0], **row} for row in rows])
    _write_csv(table, args.out)
    job.metrics({f"{r.metric}.{r.comparison.replace('→', '_to_')}": r.mean for r in table.itertuples()})


def _write_csv(table, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    table.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def summarise(args, job) -> None:
    """Gather per-pair scores into the results table, the summary and the paper-style figure."""
    import pandas as pd

    from sparsealign import report

    table = pd.concat([pd.read_csv(p) for p in args.scores], ignore_index=True)
    _write_csv(table, args.table_out)
    summary = report.summarise_over_pairs(table, group=args.group)
    _write_csv(summary, args.summary_out)
    report.paper_figure(summary, args.figure_out, panel=args.group, title=args.title)
    job.artifact(args.table_out)
    job.artifact(args.summary_out)
    job.artifact(args.figure_out)
    _log(f"wrote {args.table_out}, {args.summary_out}, {args.figure_out}")


def build_report(args, job) -> None:
    """Write the self-contained HTML report from the results tables and figures."""
    from sparsealign import report

    report.write_report(args.out, summaries=args.summaries, figures=args.figures,
                        histories=args.histories, config=_json(args.params) if args.params else {})
    job.artifact(args.out)
    print(f"report: {Path(args.out).resolve()}", flush=True)


def check(args) -> int:
    """Validate a config, the mirror files it needs and any stores named, without running."""
    from sparsealign.config import config_problems, load_config

    problems = config_problems(args.config)
    if not problems:
        problems += _mirror_problems(load_config(args.config))
    problems += _store_problems(args.stores)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.config}: ok" + (f"; {len(args.stores)} stores ok" if args.stores else ""))
    return 2 if problems else 0


def _mirror_problems(config: dict) -> list[str]:
    """One message per real-data file the config needs that is missing or fails its checksum."""
    import os

    from sparsealign.models.cowley import FAMILIES, MODEL_DIR
    from sparsealign.recordings.datasets import cowley_v4_files
    from sparsealign.stimuli.mirror import verify_files

    needed = []
    for key in ("v4", "dnn"):
        if config[key]["enabled"]:
            needed += [cowley_v4_files(s)["images"] for s in config[key]["images"]["sessions"]]
    if config["v4"]["enabled"]:
        needed += [cowley_v4_files(s)["responses"] for s in config["v4"]["recording_sessions"]]
    if config["dnn"]["enabled"]:
        needed += [f"{MODEL_DIR}/{FAMILIES[m]}" for m in config["dnn"]["models"] if m in FAMILIES]
    mirror = Path(os.environ.get("SPARSEALIGN_DATA_MIRROR", config["data_mirror"]))
    if needed and not (mirror / "SHA256SUMS").is_file():
        return [str(fail(mirror / "SHA256SUMS", "no such file",
                         "the data mirror's checksum list (data_mirror / SPARSEALIGN_DATA_MIRROR)"))]
    problems = []
    for relative in dict.fromkeys(needed):
        try:
            verify_files(mirror, [relative])
        except SparsealignError as exc:
            problems.append(str(exc))
    return problems


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


def run_pipeline(args) -> int:
    """Run the pipeline (Snakemake) and say where the report is."""
    from sparsealign.config import load_config
    from sparsealign.launcher import run_snakemake

    config = load_config(args.config)
    cores = [] if any(a.startswith(("--cores", "-c", "--jobs", "-j")) for a in args.snakemake_args) \
        else ["--cores", "all"]
    code = run_snakemake(_snakemake(args, cores + args.snakemake_args))
    if code == 0:
        print(f"report: {Path(config['results_dir'], 'report.html').resolve()}")
    return code


def status(args) -> int:
    """What is done and what would run (a Snakemake dry run, summarised)."""
    import subprocess

    proc = subprocess.run(_snakemake(args, ["--dry-run", "--quiet", "rules", "host", "reason"]
                                     + args.snakemake_args), capture_output=True, text=True)
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
    """Rebuild the summaries, figures and HTML report from the existing results tables."""
    import subprocess

    return subprocess.call(_snakemake(args, ["--cores", "1", "--forcerun", "summarise_toy", "report",
                                             "--", "report"]))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def ui(args) -> int:
    """Start the MLflow UI on loopback over the project's store; Ctrl-C stops it and its workers."""
    import os
    import signal
    import subprocess

    from sparsealign.tracking import tracking_uri

    uri = args.backend_store_uri or tracking_uri()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    # Browsing runs needs no background job runner (it forks several huey workers).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, start_new_session=True, env=env)
    # SIGTERM (kill, a test's teardown) stops the server group just as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"MLflow UI: http://127.0.0.1:{args.port} (store {uri}); Ctrl-C to stop", flush=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and every worker it forked
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- plumbing
STAGES = {
    "toy-data": toy_data, "toy-model": toy_model, "import-recordings": import_recordings,
    "extract": extract, "train-sae": train_sae, "latents": latents, "align-pair": align_pair,
    "align-brain": align_brain, "summarise": summarise, "write-report": build_report,
}
PASS_THROUGH = ("run", "status")  # commands whose unknown arguments go to Snakemake
COMMANDS = {"run": run_pipeline, "status": status, "report": rebuild_report, "ui": ui, "check": check}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsealign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--rule", default=name, help="MLflow: the Snakemake rule (default: stage name)")
        p.add_argument("--wildcards", default="{}", help="MLflow: the job's wildcards as JSON")
        return p

    p = stage("toy-data", "held-out feature vectors of one seed pair")
    p.add_argument("--pair", type=int, required=True)
    p.add_argument("--params", required=True, help="the toy config slice, JSON")
    p.add_argument("--out", required=True)

    p = stage("toy-model", "train one toy model, store its held-out activations")
    p.add_argument("--features", required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="initialisation seed")
    p.add_argument("--pair", type=int, required=True, help="data-stream seed (the seed pair)")
    p.add_argument("--params", required=True)
    p.add_argument("--model-out", required=True)
    p.add_argument("--out", required=True)

    p = stage("import-recordings", "verify a named dataset against the mirror and convert it")
    p.add_argument("--dataset", required=True, choices=("cowley2023_v4", "nh2015_natsounds"))
    p.add_argument("--params", required=True, help="{mirror, sessions}, JSON")
    p.add_argument("--out", required=True, help="directory for the stores")

    p = stage("extract", "activations of a registered model's layers on the V4 images")
    p.add_argument("--model", required=True)
    p.add_argument("--params", required=True, help="{mirror, sessions, layers, reduction, batch_size}, JSON")
    p.add_argument("--out-dir", required=True)

    p = stage("train-sae", "train an SAE (and its random control) on an activations store")
    p.add_argument("--activations", required=True)
    p.add_argument("--params", required=True, help="the SAE config slice, JSON")
    p.add_argument("--sae-out", required=True)
    p.add_argument("--random-out", required=True)
    p.add_argument("--history-out", required=True)

    p = stage("latents", "encode an activations store through an SAE")
    p.add_argument("--activations", required=True)
    p.add_argument("--sae", required=True)
    p.add_argument("--encoder", choices=("sae", "random"), required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--out", required=True)

    p = stage("align-pair", "score neurons/SAE/random-SAE comparisons between two systems")
    p.add_argument("--a", nargs=3, required=True, metavar=("NEURONS", "SAE", "RANDOM"))
    p.add_argument("--b", nargs=3, required=True, metavar=("NEURONS", "SAE", "RANDOM"))
    p.add_argument("--features", help="ground-truth feature store (toy experiments)")
    p.add_argument("--params", required=True, help="the alignment config slice, JSON")
    p.add_argument("--labels", help="extra columns for every row, JSON")
    p.add_argument("--out", required=True)

    p = stage("align-brain", "score neurons/SAE/random-SAE latents of a layer against a recording")
    p.add_argument("--source", nargs=3, required=True, metavar=("NEURONS", "SAE", "RANDOM"))
    p.add_argument("--recording", required=True, help="the recording store (target)")
    p.add_argument("--repeats", help="the same recording with a repeat dim (noise ceiling)")
    p.add_argument("--target-label", default="V4")
    p.add_argument("--params", required=True, help="the alignment config slice, JSON")
    p.add_argument("--labels", help="extra columns for every row, JSON")
    p.add_argument("--out", required=True)

    p = stage("summarise", "results table, summary over seed pairs, paper-style figure")
    p.add_argument("--scores", nargs="+", required=True)
    p.add_argument("--group", default="hidden", help="column that makes the figure's panels")
    p.add_argument("--title", default="")
    p.add_argument("--table-out", required=True)
    p.add_argument("--summary-out", required=True)
    p.add_argument("--figure-out", required=True)

    p = stage("write-report", "the self-contained HTML report (what the report rule calls)")
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--figures", nargs="+", required=True)
    p.add_argument("--histories", nargs="*", default=[])
    p.add_argument("--params", help="the full config, JSON")
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
    names = ("features", "activations", "sae", "a", "b", "source", "recording", "repeats", "scores",
             "summaries", "figures", "histories")
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
    from sparsealign.schema import config_sha

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
        return run(argv)
    except SparsealignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
