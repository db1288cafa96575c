"""The pipeline's stages: one function per Snakemake rule, callable without Snakemake.

Each stage takes a ``params`` dict already validated against the schema and filled with
its defaults (:func:`sparsealign.config.validate_section`), the paths it reads and
writes, and ``job``, the MLflow child run it reports to. It writes its outputs atomically
and names no dataset or experiment: those come from the config.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from sparsealign.atomic import atomic_path, write_text
from sparsealign.errors import fail
from sparsealign.progress import Progress


def log(message: str) -> None:
    print(f"[sparsealign] {message}", file=sys.stderr, flush=True)


def write_csv(table, path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


# --------------------------------------------------------------------------- systems
def toy_data(params: dict, data_seed: int, out, job) -> None:
    """Held-out feature vectors of one data seed: the stimuli its toy models are shown."""
    from sparsealign import schema
    from sparsealign.models import toy

    cfg = toy.ToyConfig(n_features=params["n_features"],
                        feature_probability=params["feature_probability"])
    features = toy.heldout_features(data_seed, params["n_samples"], cfg)
    ids = [f"toy{data_seed}-{i:07d}" for i in range(features.shape[0])]
    units = [f"feature/{i:05d}" for i in range(features.shape[1])]
    ds = schema.make_store(features, ids, units, source=f"toy-features-seed{data_seed}",
                           layer="features", kind="ground_truth", config=params)
    schema.save_store(ds, out)
    job.metrics({"active_fraction": float((features > 0).mean())})
    log(f"wrote {out} ({features.shape[0]} stimuli × {features.shape[1]} features)")


def toy_model(params: dict, hidden: int, seed: int, data_seed: int, features, model_out, out,
              job) -> None:
    """Train one toy model on its data seed's stream; store its neurons' held-out responses."""
    import torch

    from sparsealign import schema
    from sparsealign.models import toy

    cfg = toy.ToyConfig(**params)
    stimuli = schema.open_store(features)
    with Progress(f"toy model m={hidden} seed={seed}", cfg.steps) as bar:
        model, curve = toy.train_toy_model(
            hidden, seed, data_seed, cfg,
            progress=lambda step, loss: bar.update(step - bar.done, loss=loss))
    values = toy.hidden_activations(model, schema.responses(stimuli).astype("float32"))
    units = [f"hidden/{i:05d}" for i in range(values.shape[1])]
    ds = schema.make_store(values, stimuli["stimulus"].values, units,
                           source=f"toy-m{hidden}-seed{seed}", layer="hidden", kind="neurons",
                           config=params, attrs={"init_seed": seed, "data_seed": data_seed})
    with atomic_path(model_out) as tmp:
        torch.save({"state_dict": model.state_dict(), "n_hidden": hidden, "config": params}, tmp)
    schema.save_store(ds, out)
    job.curves({"toy_loss": list(zip(curve["step"], curve["loss"]))})
    job.metrics({"final_loss": curve["loss"][-1],
                 "dead_neurons": int((values.max(axis=0) <= 0).sum())})


def load_stimuli(params: dict, path=None, ids_csv=None):
    """``(ids, images)`` of a stimulus set (``params``: its config entry without paths)."""
    from sparsealign.stimuli.images import load_image_folder, load_session_images

    if params["kind"] == "image_sessions":
        ids, images = load_session_images(params["dataset"], params["sessions"])
        limit = params.get("max_stimuli")
        return (ids[:limit], images[:limit]) if limit else (ids, images)
    if params["kind"] == "image_folder":
        if path is None:
            raise fail("--images", "missing", "the folder or zip of an image_folder stimulus set")
        return load_image_folder(path, ids_csv, params.get("max_stimuli"))
    raise fail("stimuli.kind", f"{params['kind']!r} cannot be shown to a network",
               "image_sessions or image_folder")


def extract(params: dict, out, job, images=None, ids_csv=None) -> None:
    """Activations of one layer of a network on its stimulus set → one store."""
    from sparsealign import schema
    from sparsealign.extract import extract_model

    (layer, module), = params["layer"].items()
    ids, stimuli = load_stimuli(params["stimuli"], images, ids_csv)
    log(f"extracting {params['model']} {layer} on {len(ids)} stimuli")
    ds = extract_model(params["model"], ids, stimuli, layer, module,
                       reduction=params["reduction"], batch_size=params["batch_size"],
                       config=params)
    schema.save_store(ds, out)
    job.metrics({"stimuli": len(ids), "units": ds.sizes["unit"]})


def import_dataset(dataset: str, out, job) -> None:
    """Verify a named dataset of the mirror against its checksums and convert all of it."""
    from sparsealign.recordings.datasets import import_dataset as convert
    from sparsealign.stimuli.mirror import default_mirror_dir

    with atomic_path(out) as tmp:
        paths = convert(dataset, default_mirror_dir(), tmp, config={"dataset": dataset})
    job.metrics({"stores": len(paths)})
    log(f"imported {dataset}: {len(paths)} stores under {out}")


def import_recording(params: dict, path, out, job, ids=None) -> None:
    """A recording file (npz/npy, NWB, NetCDF/Zarr) → ``out`` (+ ``<out>_repeats`` trials)."""
    from sparsealign import schema
    from sparsealign.recordings import load_recording

    ds = load_recording(params, path, ids)
    if "repeat" in ds["responses"].dims:
        trials = Path(str(out).removesuffix(".zarr") + "_repeats.zarr")
        schema.save_store(ds, trials)
        ds = ds.mean("repeat", skipna=True, keep_attrs=True)
    schema.save_store(ds, out)
    job.metrics({"stimuli": ds.sizes["stimulus"], "units": ds.sizes["unit"]})
    log(f"wrote {out} ({ds.sizes['stimulus']} stimuli × {ds.sizes['unit']} units)")


# --------------------------------------------------------------------------- SAEs
TIMING_KEYS = ("seconds", "tokens_per_second", "data_wait_seconds")


def sae_config(params: dict, d_in: int):
    """An :class:`~sparsealign.sae.SAEConfig` for a layer of ``d_in`` units.

    ``expansion`` (latents per input unit), when set, fixes ``n_latents``.
    """
    import dataclasses

    from sparsealign.sae import SAEConfig

    if params.get("expansion"):
        params = {**params, "n_latents": int(round(params["expansion"] * d_in))}
    if params["k"] > params["n_latents"]:
        raise fail("sae.k", f"k = {params['k']} exceeds the {params['n_latents']} latents "
                   f"of a {d_in}-unit layer", "k ≤ n_latents (lower k or raise expansion)")
    fields = {f.name for f in dataclasses.fields(SAEConfig)}
    return SAEConfig(**{k: v for k, v in params.items() if k in fields})


def train_sae(params: dict, activations, sae_out, random_out, history_out, job) -> None:
    """Train the SAE on the training split of a store, plus its untrained random control."""
    from sparsealign import schema
    from sparsealign.latents import training_split
    from sparsealign.sae import build_sae, save_sae, train_sae as fit

    store = schema.open_store(activations)
    train_ids, _ = training_split(store["stimulus"].values, params["train_fraction"])
    x = schema.responses(store.sel(stimulus=train_ids)).astype("float32")
    cfg = sae_config(params, x.shape[1])
    log(f"training {cfg.architecture} SAE ({cfg.n_latents} latents, k={cfg.k}) on "
        f"{x.shape[0]} × {x.shape[1]} activations of {activations}")
    checkpoint = checkpoint_for(sae_out, params, activations)
    total = math.ceil(x.shape[0] / cfg.batch_size) * cfg.epochs
    with Progress(f"SAE {activations}", total) as bar:
        sae, history = fit(x, cfg, checkpoint=checkpoint, log_fn=lambda step, row: bar.update(
            step - bar.done, loss=row["loss"], fvu=row["fvu"], l0=row["l0"]))
    random_sae = build_sae(sae_config({**params, "seed": params["random_seed"]}, x.shape[1]),
                           x.shape[1])
    meta = {"activations": str(activations), "n_train": int(x.shape[0])}
    curves = {k: v for k, v in history.items() if isinstance(v, list) and k != "step"}
    final = {k: v[-1] for k, v in curves.items() if v}
    final.update(history.get("final", {}))
    # Wall-clock figures go to MLflow only, so the history file is byte-stable.
    timing = {k: final.pop(k) for k in TIMING_KEYS if k in final}
    save_sae(sae, sae_out, meta)
    save_sae(random_sae, random_out, {**meta, "trained": False})
    write_text(history_out, json.dumps({"config": params, "n_train": int(x.shape[0]), "curves": {
        "step": history["step"], **curves}, "final": final}, indent=1))
    checkpoint.unlink(missing_ok=True)
    Path(f"{checkpoint}.key").unlink(missing_ok=True)
    job.curves({f"sae_{name}": list(zip(history["step"], values)) for name, values in curves.items()})
    job.metrics({f"final_{k}": v for k, v in {**final, **timing}.items() if isinstance(v, (int, float))})
    log("final " + ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, (int, float))))


def checkpoint_for(sae_out, params: dict, activations) -> Path:
    """The SAE's checkpoint: it survives a killed job, and the rerun resumes from it.

    A sidecar ``.key`` (config hash + activations md5) guards it: a checkpoint left by a
    different config or different activations is discarded, never resumed.
    """
    from sparsealign.provenance import config_sha, path_md5

    checkpoint, key_file = Path(f"{sae_out}.ckpt"), Path(f"{sae_out}.ckpt.key")
    key = f"{config_sha(params)} {path_md5(activations)}"
    if checkpoint.exists():
        if key_file.exists() and key_file.read_text() == key:
            log(f"resuming from {checkpoint}")
        else:
            log(f"discarding {checkpoint}: it was made from another config or other activations")
            checkpoint.unlink()
    write_text(key_file, key)
    return checkpoint


def latents(params: dict, activations, sae, encoder: str, out, job) -> None:
    """Encode the evaluation split of an activations store through a trained or random SAE."""
    from sparsealign import schema
    from sparsealign.latents import encode_store, training_split
    from sparsealign.sae import load_sae

    store = schema.open_store(activations)
    _, eval_ids = training_split(store["stimulus"].values, params["train_fraction"])
    kind = "sae_latents" if encoder == "sae" else "random_sae_latents"
    encode_store(load_sae(sae), store, eval_ids, out, kind=kind, config=params,
                 sparse=params["sparse_latents"])
    z = schema.open_store(out)["responses"].values
    job.metrics({"l0": float((z != 0).sum(axis=1).mean()),
                 "dead_fraction": float((z.max(axis=0) <= 0).mean())})
    log(f"wrote {out} ({z.shape[0]} stimuli × {z.shape[1]} latents)")


# --------------------------------------------------------------------------- alignment
REPRESENTATIONS = ("neurons", "sae", "random")


def _scored_rows(table_rows, labels: dict, out, job, extra: dict | None = None) -> None:
    import pandas as pd

    table = pd.DataFrame([{**labels, **(extra or {}), **row} for row in table_rows])
    write_csv(table, out)
    scored = table[table["direction"].isin(["both", "forward"])]
    # MLflow metric names allow no arrows: "SAE→SAE" is logged as "SAE_to_SAE".
    job.metrics({f"{r.metric}.{r.comparison.replace('→', '_to_')}": r.mean
                 for r in scored.itertuples()})
    log(f"wrote {out} ({len(table)} rows)")


def align_pair(params: dict, a, b, out, job, labels: dict | None = None, features=None) -> None:
    """Score the comparison grid between two systems (and ground-truth recovery, if given).

    ``a`` and ``b`` are (neurons, SAE latents, random-SAE latents) store paths.
    """
    from sparsealign import comparisons, schema

    systems = {label: {name: (path, schema.open_store(path)) for name, path in zip(REPRESENTATIONS, paths)}
               for label, paths in (("A", a), ("B", b))}
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
    with Progress(f"alignment {out}", total) as bar:
        rows = comparisons.score_comparisons(
            matched["A"], matched["B"], params["metrics"], params["n_folds"], params["seed"],
            params["options"], progress=lambda c, m, value: bar.update(1, **{m: value}))
    if features:
        _, truth = schema.match_stimuli(reference, schema.open_store(features), reference_path,
                                        features, mode="intersect")
        rows += comparisons.recovery_rows(schema.responses(truth), matched)
    _scored_rows(rows, labels or {}, out, job)


def align_recording(params: dict, source, target, out, job, labels: dict | None = None,
                    target_label: str = "target") -> None:
    """Neurons, SAE latents and random-SAE latents of one member → one recording store.

    Trials stored beside the target (``<target>_repeats.zarr``) add the noise ceiling.
    """
    from sparsealign import comparisons, schema
    from sparsealign.recordings.common import repeats_store

    recording = schema.open_store(target)
    system = {}
    for name, path in zip(REPRESENTATIONS, source):
        ds, matched = schema.match_stimuli(schema.open_store(path), recording, path, target,
                                           mode="intersect")
        system[name] = schema.responses(ds)
    target_values = schema.responses(matched)
    repeats, trials_path = None, repeats_store(target)
    if trials_path is not None:
        _, trials = schema.match_stimuli(matched, schema.open_store(trials_path), target,
                                         trials_path, mode="intersect")
        if trials.sizes["stimulus"] != matched.sizes["stimulus"]:
            raise fail(trials_path, f"lacks {matched.sizes['stimulus'] - trials.sizes['stimulus']}"
                       f" of the scored stimuli of {target}", "trials for every scored stimulus")
        repeats = trials.sel(unit=matched["unit"].values)["responses"].values
    with Progress(f"alignment {out}", len(system) * len(params["metrics"])) as bar:
        rows = comparisons.score_against_target(
            system, target_values, target_label, params["metrics"], params["n_folds"],
            params["seed"], params["options"], target_repeats=repeats,
            progress=lambda c, m, value: bar.update(1, **{m: value}))
    _scored_rows(rows, labels or {}, out, job, {"n_stimuli": target_values.shape[0]})


# --------------------------------------------------------------------------- results
def summarise(params: dict, scores, table_out, summary_out, figure_out, job) -> None:
    """Gather per-job scores into the results table, the summary and the paper-style figure.

    ``params``: ``panel`` (the column that makes the figure's panels) and ``title``.
    """
    import pandas as pd

    from sparsealign import report

    table = pd.concat([pd.read_csv(p) for p in scores], ignore_index=True)
    panel = params["panel"]
    if panel not in table.columns:
        raise fail("panel", f"no column {panel!r} in the scores", f"one of {list(table.columns)}")
    write_csv(table, table_out)
    summary = report.summarise_over_pairs(table, group=panel)
    write_csv(summary, summary_out)
    report.paper_figure(summary, figure_out, panel=panel, title=params.get("title", ""))
    for path in (table_out, summary_out, figure_out):
        job.artifact(path)
    log(f"wrote {table_out}, {summary_out}, {figure_out}")


def write_report(params: dict, summaries, figures, histories, out, job) -> None:
    """The self-contained HTML report of every experiment.

    ``params``: ``experiments`` (name → ``description``, ``panel``), ``mirror_files`` (whose
    checksums the report lists) and ``config_sha``; each may be missing.
    """
    from sparsealign import report

    report.write_report(out, summaries=summaries, figures=figures, histories=histories,
                        experiments=params.get("experiments", {}),
                        mirror_files=params.get("mirror_files", []),
                        config_sha=params.get("config_sha", ""))
    job.artifact(out)
    print(f"report: {Path(out).resolve()}", flush=True)
