# Scoring: one job per comparison of an experiment (see sparsealign.plan).


def experiments_of_kind(kind):
    return names(n for n, e in PLAN.experiments.items() if e["kind"] == kind)


def comparison(w):
    return PLAN.comparison(w.exp, w.comparison)


def pair_inputs(w):
    c = comparison(w)
    files = {"a": PLAN.representations(w.exp, c.a), "b": PLAN.representations(w.exp, c.b)}
    if c.a.ground_truth and c.a.ground_truth == c.b.ground_truth:
        files["features"] = c.a.ground_truth
    return files


rule align_pair:
    """Neuron/SAE/random-SAE comparison grid between two members (and ground-truth recovery)."""
    wildcard_constraints:
        exp=experiments_of_kind("pairs"),
    input:
        unpack(pair_inputs),
    output:
        f"{R}/{{exp}}/scores/{{comparison}}.csv",
    params:
        alignment=lambda w: as_json(config["experiments"][w.exp]["alignment"]),
        labels=lambda w: as_json(PLAN.labels(comparison(w))),
        features=lambda w, input: [f"--features={input.features}"] if "features" in input.keys() else [],
        wildcards=wildcards_json,
    log:
        "logs/align_pair/{exp}/{comparison}.log",
    shell:
        "{PY} -m sparsealign align-pair --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --a {input.a:q} --b {input.b:q} {params.features:q}"
        " --params {params.alignment:q} --labels {params.labels:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


rule align_recording:
    """Neurons / SAE latents / random-SAE latents of one member → one recording."""
    wildcard_constraints:
        exp=experiments_of_kind("to_recordings"),
    input:
        source=lambda w: PLAN.representations(w.exp, comparison(w).a),
        target=lambda w: list(comparison(w).b.inputs),
    output:
        f"{R}/{{exp}}/scores/{{comparison}}.csv",
    params:
        alignment=lambda w: as_json(config["experiments"][w.exp]["alignment"]),
        labels=lambda w: as_json(PLAN.labels(comparison(w))),
        recording=lambda w: comparison(w).b.store,
        target=lambda w: comparison(w).b.labels["target"],
        wildcards=wildcards_json,
    log:
        "logs/align_recording/{exp}/{comparison}.log",
    shell:
        "{PY} -m sparsealign align-recording --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --source {input.source:q} --recording {params.recording:q}"
        " --target-label {params.target:q} --params {params.alignment:q}"
        " --labels {params.labels:q} --out {output:q} 2>&1 | tee {log:q}"
