# Systems: anything that responds to stimuli. Each rule makes the (stimulus, unit) store
# of one member: a toy model, a network layer, or a recording.
from sparsealign.provenance import path_md5


def content_md5(paths):
    """md5 of the user's input files: editing them reruns the job, moving them does not."""
    return {os.path.basename(p): path_md5(p) for p in paths}


rule toy_features:
    """Held-out feature vectors of one data seed: the stimuli its toy models are shown."""
    output:
        directory(f"{R}/stimuli/{{stimuli}}/seed{{seed}}.zarr"),
    params:
        stimuli=lambda w: as_json(PLAN.stimuli_params(w.stimuli)),
        wildcards=wildcards_json,
    log:
        "logs/toy_features/{stimuli}/seed{seed}.log",
    shell:
        "{PY} -m sparsealign toy-data --rule {rule:q} --wildcards {params.wildcards:q}"
        " --seed {wildcards.seed} --params {params.stimuli:q} --out {output:q} 2>&1 | tee {log:q}"


def toy_features_of(w):
    return PLAN.toy_features(config["systems"][w.system]["stimuli"], int(w.seed) // 2)


rule toy_model:
    """Train one toy model of superposition; store its neurons' held-out activations."""
    wildcard_constraints:
        system=names(PLAN.systems_of_kind("toy_models")),
    input:
        features=toy_features_of,
    output:
        model=f"{R}/systems/{{system}}/m{{hidden}}_seed{{seed}}.pt",
        activations=directory(f"{R}/systems/{{system}}/m{{hidden}}_seed{{seed}}.zarr"),
    params:
        toy=lambda w: as_json(PLAN.toy_params(w.system)),
        data_seed=lambda w: int(w.seed) // 2,
        wildcards=wildcards_json,
    log:
        "logs/toy_model/{system}/m{hidden}_seed{seed}.log",
    shell:
        "{PY} -m sparsealign toy-model --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --features {input.features:q} --hidden {wildcards.hidden}"
        " --seed {wildcards.seed} --data-seed {params.data_seed} --params {params.toy:q}"
        " --model-out {output.model:q} --out {output.activations:q} 2>&1 | tee {log:q}"


def stimuli_flags(w):
    """--images/--ids-csv for image folders (--training-… for the rows' own set); nothing for
    the mirror's sessions."""
    flags, system = [], config["systems"][w.system]
    sets = {"": system["stimuli"], "training-": system.get("training_rows", {}).get("stimuli")}
    for prefix, name in sets.items():
        spec = config["stimuli"].get(name) or {}
        flags += [f"--{prefix}images={spec['path']}"] if "path" in spec else []
        flags += [f"--{prefix}ids-csv={spec['ids_csv']}"] if "ids_csv" in spec else []
    return flags


rule extract:
    """Every layer of a network on its stimuli, in one forward pass per batch: a scoring
    store per layer (one vector per stimulus) and, with training_rows, the SAE training
    rows ((image, position) vectors) of each layer."""
    wildcard_constraints:
        system=names(PLAN.systems_of_kind("network")),
    input:
        lambda w: [p for name in PLAN.network_stimuli(w.system) for p in PLAN.stimuli_inputs(name)],
    output:
        directory(f"{R}/systems/{{system}}"),
    params:
        job=lambda w: as_json(PLAN.network_params(w.system)),
        content=lambda w, input: as_json(content_md5(input)),
        stimuli=stimuli_flags,
        wildcards=wildcards_json,
    threads: 2
    # Extractions first: a network's sweeps, SAEs and scoring wait on them, and the
    # largest (VGG16 on every V4 image) starts the longest chain of the run.
    priority: 10
    log:
        "logs/extract/{system}.log",
    shell:
        "{PY} -m sparsealign extract --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --params {params.job:q} {params.stimuli:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


rule import_dataset:
    """Verify a named dataset of the data mirror against SHA256SUMS; convert all of it.

    Its folder under data/raw/ is shared by every config and versioned by DVC: no config
    key reaches this job, so no config change can make Snakemake delete it.
    """
    output:
        directory("data/raw/{dataset}"),
    params:
        wildcards=wildcards_json,
    log:
        "logs/import_dataset/{dataset}.log",
    shell:
        "{PY} -m sparsealign import-dataset --rule {rule:q} --wildcards {params.wildcards:q}"
        " --dataset {wildcards.dataset:q} --out {output:q} 2>&1 | tee {log:q}"


rule import_recording:
    """A recording file (npz/npy, NWB, NetCDF/Zarr) → the store contract."""
    wildcard_constraints:
        system=names(PLAN.systems_of_kind("recording")),
    input:
        lambda w: PLAN.recording_inputs(w.system),
    output:
        directory(f"{R}/systems/{{system}}/responses.zarr"),
    params:
        job=lambda w: as_json(PLAN.recording_params(w.system)),
        content=lambda w, input: as_json(content_md5(input)),
        path=lambda w: config["systems"][w.system]["path"],
        ids=lambda w: [f"--ids={config['systems'][w.system]['ids']}"]
        if "ids" in config["systems"][w.system]
        else [],
        wildcards=wildcards_json,
    log:
        "logs/import_recording/{system}.log",
    shell:
        "{PY} -m sparsealign import-recording --rule {rule:q} --wildcards {params.wildcards:q}"
        " --params {params.job:q} --path {params.path:q} {params.ids:q}"
        " --out {output:q} 2>&1 | tee {log:q}"
