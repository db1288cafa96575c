# Scoring: one job per comparison of an experiment (see sparsealign.plan).


def experiments_of_kind(kind):
    return names(n for n, e in PLAN.experiments.items() if e["kind"] == kind)


def comparison(w):
    return PLAN.comparison(w.exp, w.comparison)


def latent_inputs(w, c, m):
    reps = PLAN.representations(w.exp, m, c)
    return reps["sae"] + reps["random"]


def representation_flags(w, side, m):
    reps = PLAN.representations(w.exp, m, comparison(w))
    return ([f"--{side}neurons={reps['neurons']}"] + [f"--{side}sae={p}" for p in reps["sae"]]
            + [f"--{side}random={p}" for p in reps["random"]])


def pair_inputs(w):
    c = comparison(w)
    files = {"stores": read_inputs(c.a, c.b),
             "latents": latent_inputs(w, c, c.a) + latent_inputs(w, c, c.b)}
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
        a=lambda w: representation_flags(w, "a-", comparison(w).a),
        b=lambda w: representation_flags(w, "b-", comparison(w).b),
        features=lambda w, input: [f"--features={input.features}"] if "features" in input.keys() else [],
        wildcards=wildcards_json,
    log:
        "logs/align_pair/{exp}/{comparison}.log",
    shell:
        "{PY} -m sparsealign align-pair --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} {params.a:q} {params.b:q} {params.features:q}"
        " --params {params.alignment:q} --labels {params.labels:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


rule align_recording:
    """Neurons / SAE latents / random-SAE latents of one member → one recording."""
    wildcard_constraints:
        exp=experiments_of_kind("to_recordings"),
    input:
        stores=lambda w: read_inputs(comparison(w).a, comparison(w).b),
        latents=lambda w: latent_inputs(w, comparison(w), comparison(w).a),
    output:
        f"{R}/{{exp}}/scores/{{comparison}}.csv",
    params:
        alignment=lambda w: as_json(config["experiments"][w.exp]["alignment"]),
        labels=lambda w: as_json(PLAN.labels(comparison(w))),
        source=lambda w: representation_flags(w, "", comparison(w).a),
        recording=lambda w: comparison(w).b.store,
        target=lambda w: comparison(w).b.labels["target"],
        wildcards=wildcards_json,
    log:
        "logs/align_recording/{exp}/{comparison}.log",
    shell:
        "{PY} -m sparsealign align-recording --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} {params.source:q} --recording {params.recording:q}"
        " --target-label {params.target:q} --params {params.alignment:q}"
        " --labels {params.labels:q} --out {output:q} 2>&1 | tee {log:q}"


def theory_experiments():
    return names(e for e in PLAN.experiments if PLAN.theory_files(e))


def theory_params(w):
    system = config["systems"][PLAN.theory_members(w.exp)[0].system]
    features = config["stimuli"][system["stimuli"]]
    return as_json({"n_features": features["n_features"],
                    "feature_probability": features["feature_probability"]})


rule toy_theory:
    """The paper's theory on the toy models: represented features, arrangement difference,
    predicted vs measured Neuron→Neuron correlations (SCIENCE.md)."""
    wildcard_constraints:
        exp=theory_experiments(),
    input:
        models=lambda w: [PLAN.toy_model_file(m) for m in PLAN.theory_members(w.exp)],
        activations=lambda w: [m.store for m in PLAN.theory_members(w.exp)],
    output:
        table=f"{R}/{{exp}}/theory.csv",
        figure=f"{R}/{{exp}}/theory.png",
    params:
        theory=theory_params,
        labels=lambda w: [as_json({k: m.labels[k] for k in ("hidden", "pair", "seed")})
                          for m in PLAN.theory_members(w.exp)],
        wildcards=wildcards_json,
    log:
        "logs/toy_theory/{exp}.log",
    shell:
        "{PY} -m sparsealign toy-theory --rule {rule:q} --wildcards {params.wildcards:q}"
        " --models {input.models:q} --activations {input.activations:q}"
        " --labels {params.labels:q} --params {params.theory:q}"
        " --table-out {output.table:q} --figure-out {output.figure:q} 2>&1 | tee {log:q}"
