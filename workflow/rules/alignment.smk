# Scoring: one job per group of pairs that share their match labels (an explicit pair
# alone), and per source member and held-out group of recording sessions (see
# sparsealign.plan: ScoringJob).


def experiments_of_kind(kind):
    return names(n for n, e in PLAN.experiments.items() if e["kind"] == kind)


def scoring_job(w):
    return PLAN.job(w.exp, w.job)


def latent_inputs(w, c, m):
    reps = PLAN.representations(w.exp, m, c)
    return reps["sae"] + reps["random"]


def job_members(w):
    """The members the job's comparisons read, once each."""
    return list({m.key: m for c in scoring_job(w).comparisons for m in (c.a, c.b)}.values())


def ground_truth(c):
    """The toy features a pair of toy models was shown (both the same), else None."""
    return c.a.ground_truth if c.a.ground_truth and c.a.ground_truth == c.b.ground_truth else None


def pair_inputs(w):
    job = scoring_job(w)
    return {"stores": read_inputs(*job_members(w)),
            "latents": list(dict.fromkeys(p for c in job.comparisons
                                          for m in (c.a, c.b) for p in latent_inputs(w, c, m))),
            "features": list(dict.fromkeys(g for c in job.comparisons if (g := ground_truth(c))))}


def pair_specs(w):
    """Each pair of the job: both members' stores and SAE latents, its labels and features."""
    return as_json([{"a": PLAN.representations(w.exp, c.a, c),
                     "b": PLAN.representations(w.exp, c.b, c), "labels": PLAN.labels(c),
                     "features": ground_truth(c), "name": c.key}
                    for c in scoring_job(w).comparisons])


rule align_pair:
    """Neuron/SAE/random-SAE comparison grid between the two members of each pair of the
    job (and ground-truth recovery), one table."""
    wildcard_constraints:
        exp=experiments_of_kind("pairs"),
    input:
        unpack(pair_inputs),
    output:
        f"{R}/{{exp}}/scores/{{job}}.csv",
    params:
        alignment=lambda w: as_json(config["experiments"][w.exp]["alignment"]),
        pairs=pair_specs,
        wildcards=wildcards_json,
    log:
        "logs/align_pair/{exp}/{job}.log",
    shell:
        "{PY} -m sparsealign align-pair --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --pairs {params.pairs:q} --params {params.alignment:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


def recording_targets(w):
    """Each session of the job: the source's stores and the latents of its group's SAEs."""
    return as_json([{"source": PLAN.representations(w.exp, c.a, c), "recording": c.b.store,
                     "target_label": c.b.labels["target"], "labels": PLAN.labels(c),
                     "name": c.b.key} for c in scoring_job(w).comparisons])


def recording_inputs(w):
    job = scoring_job(w)
    return {"stores": read_inputs(*job_members(w)),
            "latents": list(dict.fromkeys(p for c in job.comparisons
                                          for p in latent_inputs(w, c, c.a)))}


rule align_recording:
    """Neurons / SAE latents / random-SAE latents of one member → each recording session
    its held-out group's SAEs encode (one table)."""
    wildcard_constraints:
        exp=experiments_of_kind("to_recordings"),
    input:
        unpack(recording_inputs),
    output:
        f"{R}/{{exp}}/scores/{{job}}.csv",
    params:
        alignment=lambda w: as_json(config["experiments"][w.exp]["alignment"]),
        targets=recording_targets,
        wildcards=wildcards_json,
    log:
        "logs/align_recording/{exp}/{job}.log",
    shell:
        "{PY} -m sparsealign align-recording --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --targets {params.targets:q} --params {params.alignment:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


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
