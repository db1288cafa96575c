# SAEs: one per (experiment, member, held-out group, seed, fraction of training rows —
# the ``run`` wildcard g<group>.s<seed>.f<percent>), with the experiment's SAE
# settings, plus its untrained random control. Networks with training rows train on
# (image, position) rows without the stimuli their group scores (see sparsealign.plan).


def sae_params(w):
    return as_json(config["experiments"][w.exp]["sae"])


def member_of(w):
    return PLAN.member(w.system, w.member)


def heldout_stores(w):
    """Stores whose stimuli the group's SAEs never train on (and encode), as flags."""
    return [f"--heldout={p}" for p in PLAN.heldout(w.exp, member_of(w), sae_run(w).group)]


def sae_run(w):
    """The SaeRun a train_sae job's ``run`` wildcard (``g<group>.s<seed>.f<percent>``) names."""
    return next(r for r in PLAN.sae_runs(w.exp, member_of(w)) if r.tag == w.run)


def sae_reads(w):
    """The member and the members whose stimuli its SAE holds out."""
    return [member_of(w), *PLAN.heldout_members(w.exp, member_of(w), sae_run(w).group)]


def sweep_inputs(w):
    sweep = PLAN.sweep_file(w.exp, member_of(w))
    return {"sweep": sweep} if sweep else {}


def swept(w):
    return PLAN.sweep_by_file(f"{R}/sweeps/{w.system}/{w.member}.{w.sweep}.json")


rule sae_sweep:
    """Choose k and expansion of a layer's SAEs by reconstruction on held-out rows (one
    sweep per layer and distinct sweep settings, shared by the experiments that agree)."""
    input:
        lambda w: read_inputs(swept(w)[0]),
    output:
        f"{R}/sweeps/{{system}}/{{member}}.{{sweep}}.json",
    params:
        sae=lambda w: as_json(swept(w)[1]),
        rows=lambda w: swept(w)[0].rows,
        wildcards=wildcards_json,
    resources:
        gpu=1,
    log:
        "logs/sae_sweep/{system}/{member}.{sweep}.log",
    shell:
        "{PY} -m sparsealign sae-sweep --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --rows {params.rows:q} --params {params.sae:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


rule train_sae:
    """Train one SAE (held-out group, seed, fraction) on a member's activations or training rows,
    plus the random control; score both on the held-out rows and encode the scored
    stimuli through both (one job: no second start-up per SAE)."""
    input:
        unpack(sweep_inputs),
        stores=lambda w: read_inputs(*sae_reads(w)),
    output:
        sae=f"{R}/{{exp}}/sae/{{system}}/{{member}}.{{run}}.sae.pt",
        random=f"{R}/{{exp}}/sae/{{system}}/{{member}}.{{run}}.random.pt",
        history=f"{R}/{{exp}}/sae/{{system}}/{{member}}.{{run}}.history.json",
        latents=directory(f"{R}/{{exp}}/latents/{{system}}/{{member}}.{{run}}.sae.zarr"),
        random_latents=directory(f"{R}/{{exp}}/latents/{{system}}/{{member}}.{{run}}.random.zarr"),
    params:
        sae=sae_params,
        activations=lambda w: member_of(w).store,
        seed=lambda w: sae_run(w).seed,
        fraction=lambda w: sae_run(w).fraction,
        rows=lambda w: [f"--rows={member_of(w).rows}"] if member_of(w).rows else [],
        heldout=heldout_stores,
        sweep=lambda w, input: [f"--sweep={input.sweep}"] if "sweep" in input.keys() else [],
        wildcards=wildcards_json,
    resources:
        gpu=1,
    log:
        "logs/train_sae/{exp}/{system}/{member}.{run}.log",
    shell:
        "{PY} -m sparsealign train-sae --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --activations {params.activations:q} {params.rows:q}"
        " {params.heldout:q} {params.sweep:q} --seed {params.seed}"
        " --fraction {params.fraction} --params {params.sae:q}"
        " --sae-out {output.sae:q} --random-out {output.random:q}"
        " --history-out {output.history:q} --latents-out {output.latents:q}"
        " --random-latents-out {output.random_latents:q} 2>&1 | tee {log:q}"
