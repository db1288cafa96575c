"""The pipeline's stages: one function per Snakemake rule, callable without Snakemake.

Each stage takes a ``params`` dict already validated against the schema and filled with
its defaults (:func:`sparsealign.config.validate_section`), the paths it reads and
writes, and ``job``, the MLflow child run it reports to. It writes its outputs atomically
and names no dataset or experiment: those come from the config.
"""

from __future__ import annotations

import json
import os
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
        per_session = params.get("max_stimuli_per_session")
        if per_session:
            import numpy as np

            from sparsealign.stimuli.images import unique_stimuli

            parts = [load_session_images(params["dataset"], [s]) for s in params["sessions"]]
            ids, images = unique_stimuli(np.concatenate([i[:per_session] for i, _ in parts]),
                                         np.concatenate([x[:per_session] for _, x in parts]))
        else:
            ids, images = load_session_images(params["dataset"], params["sessions"])
        limit = params.get("max_stimuli")
        return (ids[:limit], images[:limit]) if limit else (ids, images)
    if params["kind"] == "image_folder":
        if path is None:
            raise fail("--images", "missing", "the folder or zip of an image_folder stimulus set")
        return load_image_folder(path, ids_csv, params.get("max_stimuli"))
    raise fail("stimuli.kind", f"{params['kind']!r} cannot be shown to a network",
               "image_sessions or image_folder")


def extract(params: dict, out, job, images=None, ids_csv=None, training_images=None,
            training_ids_csv=None) -> None:
    """Every layer of a network on its stimuli → ``out/<layer>.zarr`` (one vector per
    stimulus) and, with ``training_rows``, ``out/<layer>.rows.zarr`` (SAE training rows).

    One forward pass serves both when the scored stimuli are among the training images.
    """
    from sparsealign import schema
    from sparsealign.extract import extract_network

    rows = params.get("training_rows")
    ids, stimuli = load_stimuli(params["stimuli"], images, ids_csv)
    common = dict(reduction=params["reduction"], batch_size=params["batch_size"], config=params)
    with atomic_path(out) as tmp:
        if rows is None:
            log(f"extracting {params['model']} {list(params['layers'])} on {len(ids)} stimuli")
            extract_network(params["model"], ids, stimuli, params["layers"], tmp, **common)
        else:
            row_ids, row_stimuli = (ids, stimuli) if rows["stimuli"] == params["stimuli"] else \
                load_stimuli(rows["stimuli"], training_images, training_ids_csv)
            log(f"extracting {params['model']} {list(params['layers'])} on {len(row_ids)} "
                f"images with training rows")
            extract_network(params["model"], row_ids, row_stimuli, params["layers"], tmp,
                            rows={k: v for k, v in rows.items() if k != "stimuli"}, **common)
            if set(ids) <= set(row_ids):
                for layer in params["layers"]:
                    store = Path(tmp, f"{layer}.zarr")
                    schema.save_store(schema.open_store(store).sel(stimulus=list(ids)), store)
            else:
                log(f"{len(set(ids) - set(row_ids))} scored stimuli are not training images: "
                    "a second pass for them")
                extract_network(params["model"], ids, stimuli, params["layers"], tmp, **common)
    job.metrics({"stimuli": len(ids), "layers": len(params["layers"])})


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
CHECKPOINT_SECONDS = 10.0


def checkpoint_seconds() -> float:
    """How much SAE training a kill may lose: the rerun resumes from the checkpoint.

    ``SPARSEALIGN_CHECKPOINT_SECONDS`` overrides :data:`CHECKPOINT_SECONDS` (e.g. on
    preemptible nodes, or to make fault injection find checkpoints in short jobs).
    """
    text = os.environ.get("SPARSEALIGN_CHECKPOINT_SECONDS")
    try:
        return float(text) if text else CHECKPOINT_SECONDS
    except ValueError:
        raise fail("SPARSEALIGN_CHECKPOINT_SECONDS", f"{text!r} is not a number",
                   "seconds of training between checkpoints") from None


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


def heldout_ids(stores) -> set:
    """Stimulus ids of the stores an SAE is scored on (and never trains on)."""
    from sparsealign import schema

    return {i for path in stores for i in schema.open_store(path, load=False)["stimulus"].values}


def training_data(params: dict, activations, rows=None, heldout=()):
    """``(training data, held-out data)`` of one SAE.

    With ``rows`` (a training-rows store): its rows, without those of the held-out stimuli
    when ``params["holdout"]``, thinned to ``params["fraction"]``; the held-out data are
    the rows of the held-out stimuli (a seeded subsample of ``params["heldout_max_rows"]``
    of them, when set). Without: the ``train_fraction`` split of the
    member's own store (held-out data: the rest, or None when it trains on everything).
    """
    import numpy as np

    from sparsealign import schema
    from sparsealign.latents import training_split
    from sparsealign.sae.data import StoreSource, row_images, select_rows

    if rows:
        # Scored: the member's stimuli that the held-out stores hold too.
        held = heldout_ids(heldout) & heldout_ids([activations]) & set(row_images(rows))
        train = select_rows(rows, exclude_images=held if params["holdout"] else (),
                            fraction=params["fraction"], seed=params["seed"])
        if train.size == 0:
            raise fail(rows, "no training rows are left once the scored stimuli are held out",
                       "training images beyond the scored ones")
        evaluation = select_rows(rows, only_images=held) if held else None
        cap = params.get("heldout_max_rows")
        if evaluation is not None and cap and evaluation.size > cap:
            rng = np.random.default_rng([params["seed"], 11])
            evaluation = np.sort(rng.choice(evaluation, size=cap, replace=False))
        return (StoreSource(rows, rows=train),
                StoreSource(rows, rows=evaluation) if evaluation is not None and evaluation.size else None)
    store = schema.open_store(activations)
    train_ids, eval_ids = training_split(store["stimulus"].values, params["train_fraction"])
    x = schema.responses(store.sel(stimulus=train_ids)).astype("float32")
    held_out = None if params["train_fraction"] >= 1 else \
        schema.responses(store.sel(stimulus=eval_ids)).astype("float32")
    return x, held_out


def _n_rows(data) -> int:
    return data.shape[0] if hasattr(data, "shape") else data.n_rows


def _d_in(data) -> int:
    return data.shape[1] if hasattr(data, "shape") else data.d


def chosen_setting(sweep) -> dict:
    """The ``k`` and ``expansion`` a sweep file chose."""
    return json.loads(Path(sweep).read_text())["chosen"]


def train_sae(params: dict, activations, seed: int, sae_out, random_out, history_out, job,
              rows=None, heldout=(), sweep=None, latents_out=None, random_latents_out=None,
              fraction: float = 1.0) -> None:
    """Train one SAE (``seed``) and its untrained control; score both on held-out data;
    with ``latents_out``/``random_latents_out``, encode the scored stimuli through both
    (as :func:`latents` does).

    ``rows``/``heldout``: see :func:`training_data`. ``sweep``: a file of
    :func:`sae_sweep` whose chosen ``k`` and ``expansion`` replace the config's.
    """
    from sparsealign import schema
    from sparsealign.sae import build_sae, evaluate_sae, save_sae, train_sae as fit

    params = {**params, "seed": seed, "fraction": fraction,
              **(chosen_setting(sweep) if sweep else {})}
    data, held_out = training_data(params, activations, rows, heldout)
    n_train, d_in = _n_rows(data), _d_in(data)
    cfg = sae_config(params, d_in)
    source = rows or activations
    log(f"training {cfg.architecture} SAE ({cfg.n_latents} latents, k={cfg.k}, seed {seed}) on "
        f"{n_train} × {d_in} rows of {source}")
    checkpoint = checkpoint_for(sae_out, params, source)
    with Progress(f"SAE {source}", cfg.total_steps(n_train)) as bar:
        sae, history = fit(data, cfg, checkpoint=checkpoint, checkpoint_seconds=checkpoint_seconds(),
                           log_fn=lambda step, row: bar.update(
            step - bar.done, loss=row["loss"], fvu=row["fvu"], l0=row["l0"]))
    random_sae = build_sae(sae_config({**params, "seed": params["random_seed"] + seed}, d_in), d_in)
    meta = {"activations": str(source), "n_train": int(n_train)}
    curves = {k: v for k, v in history.items() if isinstance(v, list) and k != "step"}
    final = {k: v[-1] for k, v in curves.items() if v}
    final.update(history.get("final", {}))
    # Wall-clock figures go to MLflow only, so the history file is byte-stable.
    timing = {k: final.pop(k) for k in TIMING_KEYS if k in final}
    record = {"config": params, "n_train": int(n_train), "curves": {"step": history["step"], **curves},
              "final": final}
    if held_out is not None:
        record["heldout"] = evaluate_sae(sae, held_out)
        record["random_heldout"] = evaluate_sae(random_sae, held_out)
    save_sae(sae, sae_out, meta)
    save_sae(random_sae, random_out, {**meta, "trained": False})
    for model, encoder, out in ((sae, "sae", latents_out), (random_sae, "random", random_latents_out)):
        if out:
            encode_scored(params, schema.open_store(activations), model, encoder, out, job, heldout)
    write_text(history_out, json.dumps(record, indent=1))
    checkpoint.unlink(missing_ok=True)
    Path(f"{checkpoint}.key").unlink(missing_ok=True)
    job.curves({f"sae_{name}": list(zip(history["step"], values)) for name, values in curves.items()})
    job.metrics({f"final_{k}": v for k, v in {**final, **timing}.items() if isinstance(v, (int, float))})
    job.metrics({f"heldout_{k}": v for k, v in record.get("heldout", {}).items()})
    log("final " + ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, (int, float))))
    if "heldout" in record:
        log("held-out " + ", ".join(f"{k}={v:.4g}" for k, v in record["heldout"].items()))


def sae_sweep(params: dict, rows, out, job) -> None:
    """Score every (k, expansion) of ``params["sweep"]`` on held-out rows; choose one.

    The images of the rows store are split (seeded) into training and validation images;
    each setting trains on at most ``max_rows`` training rows and is scored on the
    validation rows by FVU, L0 and dead fraction. The rule, fixed before any alignment
    is computed: among settings with a dead fraction ≤ ``max_dead_fraction``, the
    sparsest (smallest k, then smallest expansion) whose FVU is within ``fvu_tolerance``
    of the best. Only reconstruction is seen, so scored images may be among them.
    """
    import numpy as np

    from sparsealign.sae import evaluate_sae, train_sae as fit
    from sparsealign.sae.data import StoreSource, row_images, select_rows

    sweep = params["sweep"]
    images = sorted(set(row_images(rows)))
    rng = np.random.default_rng([params["seeds"][0], 7])
    n_val = int(round(sweep["validation_fraction"] * len(images)))
    if n_val < 1 or n_val >= len(images):
        raise fail(rows, f"{len(images)} images cannot be split {sweep['validation_fraction']:.0%}"
                   " for validation", "more training images, or another validation_fraction")
    validation = set(rng.choice(images, size=n_val, replace=False).tolist())
    train = select_rows(rows, exclude_images=validation)
    if train.size > sweep["max_rows"]:
        train = np.sort(rng.choice(train, size=sweep["max_rows"], replace=False))
    source, held_out = StoreSource(rows, rows=train), StoreSource(
        rows, rows=select_rows(rows, only_images=validation))
    settings = []
    for k in sweep["k"]:
        for expansion in sweep["expansion"]:
            trial = {**params, "k": k, "expansion": expansion, "epochs": sweep["epochs"],
                     "seed": params["seeds"][0]}
            cfg = sae_config(trial, source.d)
            log(f"sweep {rows}: k={k}, expansion={expansion} ({cfg.n_latents} latents) on "
                f"{source.n_rows} rows")
            sae, _ = fit(source, cfg)
            settings.append({"k": k, "expansion": expansion, "n_latents": cfg.n_latents,
                             **evaluate_sae(sae, held_out)})
    eligible = [s for s in settings if s["dead_fraction"] <= sweep["max_dead_fraction"]]
    fallback = not eligible
    if fallback:
        log(f"warning: every setting has more than {sweep['max_dead_fraction']:.0%} dead latents;"
            " choosing among all")
        eligible = settings
    best = min(s["fvu"] for s in eligible)
    chosen = min((s for s in eligible if s["fvu"] <= best + sweep["fvu_tolerance"]),
                 key=lambda s: (s["k"], s["expansion"]))
    rule = (f"sparsest setting (smallest k, then expansion) with dead fraction ≤ "
            f"{sweep['max_dead_fraction']} and held-out FVU ≤ best + {sweep['fvu_tolerance']}")
    write_text(out, json.dumps({"chosen": {"k": chosen["k"], "expansion": chosen["expansion"]},
                                "rule": rule, "no_setting_met_the_dead_fraction": fallback,
                                "n_train_rows": int(source.n_rows),
                                "n_validation_rows": int(held_out.n_rows),
                                "settings": settings}, indent=1))
    job.metrics({f"chosen_{k}": chosen[k] for k in ("k", "expansion", "fvu", "l0", "dead_fraction")})
    log(f"chose k={chosen['k']}, expansion={chosen['expansion']} (FVU {chosen['fvu']:.4f}, "
        f"dead {chosen['dead_fraction']:.3f})")


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


def latents(params: dict, activations, sae, encoder: str, out, job, heldout=()) -> None:
    """Encode a member's scored stimuli through a trained or random SAE.

    The scored stimuli: those of the ``heldout`` stores (which the SAE never trained
    on), or without them the evaluation split of ``train_fraction``.
    """
    from sparsealign import schema
    from sparsealign.sae import load_sae

    store = schema.open_store(activations)  # a bad store is named before the SAE is read
    encode_scored(params, store, load_sae(sae), encoder, out, job, heldout)


def encode_scored(params: dict, store, sae, encoder: str, out, job, heldout=()) -> None:
    """:func:`latents` with the activations store open and the SAE in memory."""
    from sparsealign import schema
    from sparsealign.latents import encode_store, training_split

    ids = store["stimulus"].values
    if heldout:
        held = heldout_ids(heldout)
        ids = [i for i in ids if i in held]
    else:
        _, ids = training_split(ids, params["train_fraction"])
    kind = "sae_latents" if encoder == "sae" else "random_sae_latents"
    encode_store(sae, store, ids, out, kind=kind, config=params, sparse=params["sparse_latents"])
    z = schema.open_store(out)["responses"].values
    job.metrics({f"{encoder}_latents_l0": float((z != 0).sum(axis=1).mean()),
                 f"{encoder}_latents_dead_fraction": float((z.max(axis=0) <= 0).mean())})
    log(f"wrote {out} ({z.shape[0]} stimuli × {z.shape[1]} latents)")


# --------------------------------------------------------------------------- alignment
REPRESENTATIONS = ("neurons", "sae", "random")


def _scored_rows(parts, out, job) -> None:
    """Write the score rows of one or more comparisons as one table and log their means.

    ``parts``: ``(name, rows, columns)`` per comparison; ``columns`` go on each of its rows.
    A job of several comparisons prefixes each metric with the comparison's name.
    """
    import pandas as pd

    tables, metrics = [], {}
    for name, rows, columns in parts:
        table = pd.DataFrame([{**columns, **row} for row in rows])
        tables.append(table)
        scored = table[table["direction"].isin(["both", "forward"])]
        prefix = f"{name}." if len(parts) > 1 else ""
        # MLflow metric names allow no arrows or minus signs: "SAE→SAE − Neuron→Neuron" is
        # logged as "SAE_to_SAE minus Neuron_to_Neuron".
        metrics.update({f"{prefix}{r.metric}.{r.comparison.replace('→', '_to_').replace('−', 'minus')}":
                        r.mean for r in scored.itertuples()})
    table = pd.concat(tables, ignore_index=True)
    write_csv(table, out)
    job.metrics(metrics)
    log(f"wrote {out} ({len(table)} rows)")


def _scoring_options(params: dict) -> dict:
    return {"n_boot": params["n_boot"], "ci": params["ci"]}


def _load_representations(stores: dict, reference, reference_path) -> dict:
    """``{"neurons": array, "sae": [array per seed], "random": [...]}`` on the reference's
    stimuli, in its order; every store must hold every one of them."""
    from sparsealign import schema

    def load(path):
        _, ds = schema.match_stimuli(reference, schema.open_store(path), reference_path, path,
                                     mode="intersect")
        if ds.sizes["stimulus"] != reference.sizes["stimulus"]:
            raise fail(path, f"holds {ds.sizes['stimulus']} of the {reference.sizes['stimulus']}"
                       f" scored stimuli of {reference_path}", "every scored stimulus")
        return schema.responses(ds)

    return {"neurons": load(stores["neurons"]), "sae": [load(p) for p in stores["sae"]],
            "random": [load(p) for p in stores["random"]]}


def align_pair(params: dict, a: dict, b: dict, out, job, labels: dict | None = None,
               features=None) -> None:
    """Score the comparison grid between two systems (and ground-truth recovery, if given).

    ``a`` and ``b`` map ``neurons`` to a store and ``sae``/``random`` to the latents
    stores of each SAE seed; everything is scored on the SAE latents' stimuli.
    """
    align_pairs(params, [{"a": a, "b": b, "labels": labels or {}, "features": features}], out, job)


def align_pairs(params: dict, pairs: list[dict], out, job) -> None:
    """:func:`align_pair` for several pairs, written as one table. Each entry of ``pairs``:
    ``a``, ``b``, ``labels`` and optionally ``features`` and ``name`` (the prefix of its
    MLflow metrics)."""
    parts = [(entry.get("name") or f"pair{i}",
              _pair_rows(params, entry["a"], entry["b"], entry.get("features")),
              entry.get("labels", {})) for i, entry in enumerate(pairs)]
    _scored_rows(parts, out, job)


def _pair_rows(params: dict, a: dict, b: dict, features=None) -> list:
    from sparsealign import comparisons, schema

    reference_path = a["sae"][0]
    reference = schema.open_store(reference_path)
    matched = {label: _load_representations(stores, reference, reference_path)
               for label, stores in (("A", a), ("B", b))}
    total = len(comparisons.COMPARISONS) * len(params["metrics"])
    with Progress(f"alignment {reference_path}", total) as bar:
        rows = comparisons.score_comparisons(
            matched["A"], matched["B"], params["metrics"], params["n_folds"], params["seed"],
            params["options"], progress=lambda c, m, value: bar.update(1, **{m: value}),
            **_scoring_options(params))
    if features:
        _, truth = schema.match_stimuli(reference, schema.open_store(features), reference_path,
                                        features, mode="intersect")
        rows += comparisons.recovery_rows(schema.responses(truth), matched)
    return rows


def align_recording(params: dict, source: dict, target, out, job, labels: dict | None = None,
                    target_label: str = "target") -> None:
    """Neurons, SAE latents and random-SAE latents (each seed) of one member → one recording.

    Trials stored beside the target (``<target>_repeats.zarr``) add the noise ceiling.
    """
    align_recordings(params, [{"source": source, "recording": target, "target_label": target_label,
                               "labels": labels or {}}], out, job)


def align_recordings(params: dict, scored: list[dict], out, job) -> None:
    """:func:`align_recording` for several recordings (a source member against each session
    its SAEs encode), written as one table. Each entry of ``scored``: ``source``
    (``neurons``, ``sae``, ``random`` stores), ``recording``, ``target_label``, ``labels``
    and optionally ``name`` (the prefix of its MLflow metrics)."""
    parts = []
    for entry in scored:
        rows, n_stimuli = _recording_rows(params, entry["source"], entry["recording"],
                                          entry.get("target_label", "target"))
        parts.append((entry.get("name") or str(entry["recording"]), rows,
                      {**entry.get("labels", {}), "n_stimuli": n_stimuli}))
    _scored_rows(parts, out, job)


def _recording_rows(params: dict, source: dict, target, target_label: str) -> tuple[list, int]:
    """The score rows of one source against one recording, and the number of stimuli."""
    from sparsealign import comparisons, schema
    from sparsealign.recordings.common import repeats_store

    recording = schema.open_store(target)
    # Scored: the recording's stimuli that the latents hold (all of them, normally).
    reference_path = source["sae"][0]
    _, matched = schema.match_stimuli(schema.open_store(reference_path), recording,
                                      reference_path, target, mode="intersect")
    system = _load_representations(source, matched, target)
    target_values = schema.responses(matched)
    repeats, trials_path = None, repeats_store(target)
    if trials_path is not None:
        _, trials = schema.match_stimuli(matched, schema.open_store(trials_path), target,
                                         trials_path, mode="intersect")
        if trials.sizes["stimulus"] != matched.sizes["stimulus"]:
            raise fail(trials_path, f"lacks {matched.sizes['stimulus'] - trials.sizes['stimulus']}"
                       f" of the scored stimuli of {target}", "trials for every scored stimulus")
        repeats = trials.sel(unit=matched["unit"].values)["responses"].values
    with Progress(f"alignment {target}", len(system) * len(params["metrics"])) as bar:
        rows = comparisons.score_against_target(
            system, target_values, target_label, params["metrics"], params["n_folds"],
            params["seed"], params["options"], target_repeats=repeats,
            progress=lambda c, m, value: bar.update(1, **{m: value}), **_scoring_options(params))
    return rows, int(target_values.shape[0])


# --------------------------------------------------------------------------- results
def sae_quality(histories):
    """One row per SAE: its training rows and its held-out FVU, L0 and dead fraction (and
    the random control's), read from the history files."""
    import pandas as pd

    rows = []
    for path in histories:
        record = json.loads(Path(path).read_text())
        name = Path(path).name.removesuffix(".history.json")
        member, _, run = name.partition(".")
        config = record["config"]
        row = {"system": Path(path).parent.name, "member": member, "run": run,
               "seed": config.get("seed"), "k": config.get("k"),
               "expansion": config.get("expansion"), "n_train": record["n_train"]}
        for prefix, key in (("heldout_", "heldout"), ("random_heldout_", "random_heldout")):
            row.update({f"{prefix}{k}": v for k, v in record.get(key, {}).items()})
        row.update({f"train_{k}": record["final"].get(k) for k in ("fvu", "l0", "dead_fraction")})
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(params: dict, scores, table_out, summary_out, figure_out, job, histories=(),
              quality_out=None) -> None:
    """Gather per-job scores into the results table, the summary and the paper-style figure;
    with ``histories``, the table of every SAE's held-out quality (``quality_out``).

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
    outputs = [table_out, summary_out, figure_out]
    if quality_out:
        write_csv(sae_quality(histories), quality_out)
        outputs.append(quality_out)
    for path in outputs:
        job.artifact(path)
    log(f"wrote {table_out}, {summary_out}, {figure_out}")


def toy_theory(params: dict, models, activations, labels, table_out, figure_out, job) -> None:
    """The paper's theory on toy model pairs: represented features, arrangement difference,
    and the Neuron→Neuron correlations predicted from the weights against the measured."""
    from sparsealign import theory

    table = theory.run(models, activations, labels, params, table_out, figure_out)
    job.metrics({f"max_abs_semi_matching_difference": float(
        (table["predicted_semi_matching"] - table["measured_semi_matching"]).abs().max())})
    job.artifact(table_out)
    job.artifact(figure_out)
    log(f"wrote {table_out}, {figure_out}")


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
