"""A validated config → every file the pipeline makes, and the slice of config each job reads.

Every system expands into *members*, each one response matrix with labels:

- a ``network`` into one member per layer (labels ``system``, ``layer``);
- ``toy_models`` into one member per hidden size and seed (``hidden``, ``seed``, ``pair``:
  seeds 2p and 2p+1 train on data seed p);
- a ``recording`` into one member per session, or one member ``responses`` for a file.

A ``pairs`` experiment compares every two members of its systems that agree on its
``match`` labels; a ``to_recordings`` experiment scores every member of its sources
against every member of its targets. The workflow (``workflow/rules``) is generic over
these; it never names a dataset or an experiment.

Scoring jobs: the pairs that share their ``match`` labels (e.g. every pair of networks at
one layer; an explicit pair on its own), and the sessions a source member is scored on with
the same SAEs (one held-out group, one fraction of training rows), are one job each, so
that a job's interpreter starts, and its latents are loaded, once for all of them.

SAEs: each member an experiment reads gets one SAE per (held-out group, seed), plus its
untrained control. A network with ``training_rows`` trains its SAEs on (image, position)
rows; the stimuli a comparison scores (a recording session's images, or a pair's shared
stimuli) are held out of the rows of the SAE that encodes them. A recording's sessions
are dealt round-robin into ``sae.holdout_groups`` groups, one SAE per group. Members
without rows (toy models) keep the ``train_fraction`` split of their own stimuli.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

RAW_DIR = "data/raw"
"""Named datasets of the mirror are converted once, for every config, below this folder."""


@dataclass(frozen=True)
class Member:
    """One response matrix of a system: a network layer, a toy model, a recording session."""

    system: str
    name: str
    kind: str
    labels: dict = field(hash=False, compare=False)
    store: str = ""
    """The (stimulus, unit) store of its responses."""
    inputs: tuple = ()
    """Recordings: the file a job that reads the store depends on (the store, or the
    dataset folder that holds it)."""
    ground_truth: str | None = None
    """Toy members: the store of the features they were shown."""
    rows: str = ""
    """Networks with ``training_rows``: the store of SAE training rows of this layer."""

    @property
    def key(self) -> str:
        return f"{self.system}.{self.name}"


@dataclass(frozen=True)
class SaeRun:
    """One SAE of a member: the group of scored stimuli it never trains on, its seed, and
    the fraction of its training rows it sees (the dataset-size ablation)."""

    group: int
    seed: int
    fraction: float = 1.0

    @property
    def tag(self) -> str:
        return f"g{self.group}.s{self.seed}.f{percent(self.fraction)}"


def percent(fraction: float) -> int:
    return int(round(100 * fraction))


@dataclass(frozen=True)
class Comparison:
    """One scoring job of an experiment: two members (pairs) or a member and a target."""

    experiment: str
    a: Member
    b: Member
    group: int = 0
    """The held-out group whose SAEs encode the scored stimuli."""
    fraction: float = 1.0
    """The fraction of training rows its SAEs saw."""

    @property
    def key(self) -> str:
        suffix = "" if self.fraction == 1.0 else f".f{percent(self.fraction)}"
        return f"{self.a.key}--{self.b.key}{suffix}"


@dataclass(frozen=True)
class ScoringJob:
    """One scoring job of an experiment: its comparisons and their one scores file."""

    experiment: str
    key: str
    comparisons: tuple


MAX_COMPARISONS_PER_JOB = 32
"""A scoring job's comparisons travel on its command line as JSON (1–2 kB each): a larger
group is split into parts, well under Linux's 128 kB limit on one shell command."""


def scoring_key(c: Comparison, experiment: dict) -> str:
    """The scoring job of a comparison: every pair with its ``match`` labels (an explicit
    pair alone), or the source member against every session its held-out group's SAEs
    encode."""
    suffix = "" if c.fraction == 1.0 else f".f{percent(c.fraction)}"
    if experiment["kind"] == "to_recordings":
        return f"{c.a.key}--{c.b.system}.g{c.group}{suffix}"
    if experiment.get("pairs"):
        return c.key
    shared = ".".join(f"{k}{v}" if isinstance(v, int) else str(v)
                      for k in experiment["match"] for v in [c.a.labels.get(k)])
    return f"pairs--{shared}{suffix}"


SWEEP_IGNORES = ("seeds", "holdout", "holdout_groups", "fractions", "random_seed",
                 "sparse_latents", "train_fraction", "heldout_max_rows")
"""SAE settings that never change a sweep's outcome."""


class Plan:
    """Paths and job parameters of a validated, default-filled config."""

    def __init__(self, config: dict):
        self.config = config
        self.results = config["results_dir"].rstrip("/")
        self.members = {name: self._expand(name) for name in config["systems"]}
        self.experiments = {name: e for name, e in config["experiments"].items() if e["enabled"]}
        self.comparisons = {name: self._comparisons(name, e) for name, e in self.experiments.items()}
        self.jobs = {name: self._jobs(name) for name in self.experiments}

    # ----------------------------------------------------------------- members
    def _expand(self, name: str) -> list[Member]:
        system = self.config["systems"][name]
        kind = system["kind"]
        if kind == "network":
            # One job extracts every layer (one forward pass): its folder is the input.
            folder = self.network_dir(name)
            return [Member(name, layer, kind, {"system": name, "layer": layer},
                           f"{folder}/{layer}.zarr", (folder,),
                           rows=f"{folder}/{layer}.rows.zarr" if "training_rows" in system else "")
                    for layer in system["layers"]]
        if kind == "toy_models":
            return [Member(name, f"m{hidden}_seed{seed}", kind,
                           {"system": name, "hidden": hidden, "seed": seed, "pair": seed // 2},
                           store, (store,), ground_truth=self.toy_features(system["stimuli"], seed // 2))
                    for hidden in system["hidden_sizes"] for seed in range(2 * system["seed_pairs"])
                    for store in [f"{self.results}/systems/{name}/m{hidden}_seed{seed}.zarr"]]
        if "dataset" in system:
            folder = f"{RAW_DIR}/{system['dataset']}"
            return [Member(name, session, kind, {"target": system.get("label", name),
                                                 "session": session},
                           f"{folder}/{session}.zarr", (folder,))
                    for session in system["sessions"]]
        store = f"{self.results}/systems/{name}/responses.zarr"
        return [Member(name, "responses", kind, {"target": system.get("label", name),
                                                 "session": name}, store, (store,))]

    def network_dir(self, system: str) -> str:
        return f"{self.results}/systems/{system}"

    def member(self, system: str, name: str) -> Member:
        return next(m for m in self.members[system] if m.name == name)

    def toy_features(self, stimuli: str, data_seed: int) -> str:
        return f"{self.results}/stimuli/{stimuli}/seed{data_seed}.zarr"

    def systems_of_kind(self, *kinds) -> list[str]:
        return [n for n, s in self.config["systems"].items() if s["kind"] in kinds]

    def used_members(self) -> list[Member]:
        """Members some enabled experiment reads, in config order, once each."""
        used = {}
        for comparisons in self.comparisons.values():
            for c in comparisons:
                used[c.a.key], used[c.b.key] = c.a, c.b
        return list(used.values())

    # ----------------------------------------------------------------- comparisons
    def _comparisons(self, name: str, experiment: dict) -> list[Comparison]:
        fractions = experiment["sae"]["fractions"]
        if experiment["kind"] == "pairs":
            if experiment.get("pairs"):
                pairs = [tuple(self._member_by_key(key) for key in pair)
                         for pair in experiment["pairs"]]
            else:
                members = [m for s in experiment["systems"] for m in self.members[s]]
                groups = {}
                for m in members:
                    groups.setdefault(tuple(m.labels.get(k) for k in experiment["match"]),
                                      []).append(m)
                pairs = [pair for group in groups.values()
                         for pair in itertools.combinations(group, 2)]
            return [Comparison(name, a, b, 0, f) for f in fractions for a, b in pairs]
        targets = [m for t in experiment["targets"] for m in self.members[t]]
        n_groups = self._n_groups(experiment, len(targets))
        return [Comparison(name, source, target, i % n_groups, f) for f in fractions
                for s in experiment["sources"] for source in self._sources(experiment, s)
                for i, target in enumerate(targets)]

    def _member_by_key(self, key: str) -> Member:
        system, _, name = key.partition(".")
        return self.member(system, name)

    def _sources(self, experiment: dict, system: str) -> list[Member]:
        only = experiment.get("source_members")
        return [m for m in self.members[system] if not only or m.name in only]

    @staticmethod
    def _n_groups(experiment: dict, n_targets: int) -> int:
        if experiment["kind"] != "to_recordings" or not experiment["sae"]["holdout"]:
            return 1
        return max(1, min(experiment["sae"]["holdout_groups"], n_targets))

    def _jobs(self, experiment: str) -> list[ScoringJob]:
        grouped = {}
        for c in self.comparisons[experiment]:
            grouped.setdefault(scoring_key(c, self.experiments[experiment]), []).append(c)
        jobs = []
        for key, cs in grouped.items():
            parts = [cs[i:i + MAX_COMPARISONS_PER_JOB]
                     for i in range(0, len(cs), MAX_COMPARISONS_PER_JOB)]
            jobs += [ScoringJob(experiment, key if len(parts) == 1 else f"{key}.part{n}", tuple(part))
                     for n, part in enumerate(parts, start=1)]
        return jobs

    def job(self, experiment: str, key: str) -> ScoringJob:
        return next(j for j in self.jobs[experiment] if j.key == key)

    def labels(self, c: Comparison) -> dict:
        """Columns every score row of a comparison carries (``sae_fraction`` when the
        experiment trains SAEs on several fractions of their rows)."""
        spec = self.experiments[c.experiment]
        extra = {"sae_fraction": c.fraction} if spec["sae"]["fractions"] != [1.0] else {}
        if spec["kind"] == "pairs":
            shared = {k: c.a.labels[k] for k in spec["match"] if k in c.a.labels}
            if spec.get("pairs"):
                shared = {"pair": f"{c.a.key}↔{c.b.key}"}
            return {**shared, "system_a": c.a.system, "member_a": c.a.name,
                    "system_b": c.b.system, "member_b": c.b.name, **extra}
        return {**c.a.labels, "source": c.a.key, **c.b.labels, **extra}

    # ----------------------------------------------------------------- paths
    def sae_runs(self, experiment: str, m: Member, group: int | None = None,
                 fraction: float | None = None) -> list[SaeRun]:
        """The SAEs of a member: one per held-out group, seed and fraction of training
        rows (or only those of ``group`` and ``fraction``)."""
        keys = sorted({(c.group, c.fraction) for c in self.comparisons[experiment]
                       if m in (c.a, c.b)})
        seeds = self.experiments[experiment]["sae"]["seeds"]
        return [SaeRun(g, s, f) for g, f in keys for s in seeds
                if (group is None or g == group) and (fraction is None or f == fraction)]

    def heldout_members(self, experiment: str, m: Member, group: int) -> list[Member]:
        """The members whose stimuli the member's SAEs of ``group`` never train on: the
        recording sessions of the group, or the member's partners in pairs (a pair is
        scored on the stimuli its two members share). The SAEs encode exactly those
        stimuli. Empty for a member without training rows: its SAE trains on the
        ``train_fraction`` split of its own stimuli and encodes the rest."""
        if not m.rows:
            return []
        partners = {}
        for c in self.comparisons[experiment]:
            if c.group == group and m in (c.a, c.b):
                other = c.b if c.a == m else c.a
                # One member per stimulus set: a new partner shown the same stimuli
                # changes nothing the SAE holds out (and reruns nothing).
                partners.setdefault(json.dumps(self.stimuli_signature(other), sort_keys=True), other)
        return list(partners.values())

    def stimuli_signature(self, m: Member):
        """What fixes a member's stimulus ids: a network's stimulus set, else its store."""
        if m.kind == "network":
            return self.stimuli_params(self.config["systems"][m.system]["stimuli"])
        return m.store

    def heldout(self, experiment: str, m: Member, group: int) -> list[str]:
        """The stores of :meth:`heldout_members`."""
        return list(dict.fromkeys(x.store for x in self.heldout_members(experiment, m, group)))

    def sae_files(self, experiment: str, m: Member, run: SaeRun) -> dict:
        base = f"{self.results}/{experiment}/sae/{m.system}/{m.name}.{run.tag}"
        return {"sae": f"{base}.sae.pt", "random": f"{base}.random.pt",
                "history": f"{base}.history.json"}

    def sweep_params(self, experiment: str) -> dict:
        """What a sweep reads of an experiment's SAE settings: experiments that agree on it
        share one sweep per layer."""
        sae = self.experiments[experiment]["sae"]
        return {k: v for k, v in sae.items() if k not in SWEEP_IGNORES}

    def sweep_file(self, experiment: str, m: Member) -> str | None:
        """The member's SAE settings sweep (networks with training rows, when configured)."""
        if not (m.rows and self.experiments[experiment]["sae"].get("sweep")):
            return None
        from sparsealign.provenance import config_sha

        tag = config_sha(self.sweep_params(experiment))[:10]
        return f"{self.results}/sweeps/{m.system}/{m.name}.{tag}.json"

    def sweep_by_file(self, path: str) -> tuple[Member, dict]:
        """The member and sweep settings of a sweep file path."""
        for name in self.experiments:
            for m in self.sae_members(name):
                if self.sweep_file(name, m) == path:
                    return m, self.sweep_params(name)
        raise KeyError(path)

    def latents(self, experiment: str, m: Member, run: SaeRun, encoder: str) -> str:
        return f"{self.results}/{experiment}/latents/{m.system}/{m.name}.{run.tag}.{encoder}.zarr"

    def representations(self, experiment: str, m: Member, c: Comparison) -> dict:
        """A member's neurons (one store) and the SAE / random-SAE latents of each seed
        that a comparison scores."""
        runs = self.sae_runs(experiment, m, c.group, c.fraction)
        return {"neurons": m.store,
                "sae": [self.latents(experiment, m, r, "sae") for r in runs],
                "random": [self.latents(experiment, m, r, "random") for r in runs]}

    def scores(self, job: ScoringJob) -> str:
        return f"{self.results}/{job.experiment}/scores/{job.key}.csv"

    def summary_files(self, experiment: str) -> dict:
        base = f"{self.results}/{experiment}"
        return {"table": f"{base}/alignment.csv", "summary": f"{base}/summary.csv",
                "figure": f"{base}/figure.png", "quality": f"{base}/sae_quality.csv"}

    def theory_files(self, experiment: str) -> dict | None:
        """The toy-model theory table and figure of a pairs experiment of toy models."""
        spec = self.experiments[experiment]
        if spec["kind"] != "pairs" or any(self.config["systems"][s]["kind"] != "toy_models"
                                          for s in spec["systems"]):
            return None
        base = f"{self.results}/{experiment}"
        return {"table": f"{base}/theory.csv", "figure": f"{base}/theory.png"}

    def theory_members(self, experiment: str) -> list[Member]:
        return [m for s in self.experiments[experiment]["systems"] for m in self.members[s]]

    def toy_model_file(self, m: Member) -> str:
        return m.store.removesuffix(".zarr") + ".pt"

    @property
    def report(self) -> str:
        return f"{self.results}/report.html"

    def histories(self, experiment: str) -> list[str]:
        return [self.sae_files(experiment, m, r)["history"] for m in self.sae_members(experiment)
                for r in self.sae_runs(experiment, m)]

    def sae_members(self, experiment: str) -> list[Member]:
        """Members an experiment trains SAEs on (never the recordings), once each."""
        seen = {}
        for c in self.comparisons[experiment]:
            for m in (c.a, c.b):
                if m.kind != "recording":
                    seen[m.key] = m
        return list(seen.values())

    def panel(self, experiment: str) -> str:
        """The column that makes the figure's panels: a label, ``source`` when several sources."""
        spec = self.experiments[experiment]
        if spec["kind"] == "to_recordings" and len(spec["sources"]) > 1 and spec["panel"] == "layer":
            return "source"
        return spec["panel"]

    # ----------------------------------------------------------------- job parameters
    def stimuli_params(self, name: str) -> dict:
        """What a job reads of a stimulus set: never a machine path (paths are inputs)."""
        spec = self.config["stimuli"][name]
        return {k: v for k, v in spec.items() if k not in ("path", "ids_csv")}

    def stimuli_inputs(self, name: str) -> list[str]:
        spec = self.config["stimuli"][name]
        return [spec[k] for k in ("path", "ids_csv") if k in spec]

    def network_params(self, system: str) -> dict:
        """What the extraction job of a network reads: every layer, in one forward pass."""
        spec = self.config["systems"][system]
        layers = spec["layers"]
        layers = dict(layers) if isinstance(layers, dict) else {name: None for name in layers}
        params = {"model": spec["model"], "layers": layers, "reduction": spec["reduction"],
                  "batch_size": spec["batch_size"], "stimuli": self.stimuli_params(spec["stimuli"])}
        if "training_rows" in spec:
            rows = dict(spec["training_rows"])
            rows["stimuli"] = self.stimuli_params(rows.get("stimuli", spec["stimuli"]))
            params["training_rows"] = rows
        return params

    def network_stimuli(self, system: str) -> list[str]:
        """Names of the stimulus sets a network's extraction shows it (scoring, training)."""
        spec = self.config["systems"][system]
        return list(dict.fromkeys([spec["stimuli"], spec.get("training_rows", {}).get(
            "stimuli", spec["stimuli"])]))

    def toy_params(self, system: str) -> dict:
        """The toy training slice (no hidden sizes or seed counts: those are wildcards)."""
        spec = self.config["systems"][system]
        features = self.config["stimuli"][spec["stimuli"]]
        return {"n_features": features["n_features"],
                "feature_probability": features["feature_probability"],
                "steps": spec["steps"], "batch_size": spec["batch_size"], "lr": spec["lr"]}

    def recording_params(self, system: str) -> dict:
        spec = self.config["systems"][system]
        return {k: v for k, v in spec.items() if k not in ("path", "ids", "label", "kind")}

    def recording_inputs(self, system: str) -> list[str]:
        spec = self.config["systems"][system]
        return [spec[k] for k in ("path", "ids") if k in spec]

    def datasets(self) -> list[str]:
        """Named datasets read by enabled experiments (their folders under ``data/raw``)."""
        names = {self.config["systems"][m.system].get("dataset") for m in self.used_members()}
        return sorted(n for n in names if n)


def mirror_files(config: dict) -> list[str]:
    """Relative paths of every mirror file the enabled experiments read, once each."""
    from sparsealign.models import mirror_files as model_files
    from sparsealign.recordings.datasets import dataset_files
    from sparsealign.stimuli.images import session_image_files

    plan = Plan(config)
    needed = []
    for m in plan.used_members():
        system = config["systems"][m.system]
        if m.kind == "network":
            for name in plan.network_stimuli(m.system):
                stimuli = config["stimuli"][name]
                if stimuli["kind"] == "image_sessions":
                    needed += session_image_files(stimuli["dataset"], stimuli["sessions"])
            needed += model_files(system["model"])
        elif m.kind == "recording" and "dataset" in system:
            # The import converts the whole dataset: every file of it must be there.
            needed += dataset_files(system["dataset"])
    return list(dict.fromkeys(needed))
