# SAEs: one per (experiment, member, held-out group, seed), with the experiment's SAE
# settings, plus its untrained random control. Networks with training rows train on
# (image, position) rows without the stimuli their group scores (see sparsealign.plan).


def sae_params(w):
    return as_json(config["experiments"][w.exp]["sae"])


def member_of(w):
    return PLAN.member(w.system, w.member)


def heldout_stores(w):
    """Stores whose stimuli the group's SAEs never train on (and encode), as flags."""
    return [f"--heldout={p}" for p in PLAN.heldout(w.exp, member_of(w), int(w.group))]


def sweep_inputs(w):
    sweep = PLAN.sweep_file(w.exp, member_of(w))
    return {"sweep": sweep} if sweep else {}


rule sae_sweep:
    """Choose k and expansion of a layer's SAEs by reconstruction on held-out rows."""
    input:
        lambda w: read_inputs(member_of(w)),
    output:
        f"{R}/{{exp}}/sae/{{system}}/{{member}}.sweep.json",
    params:
        sae=sae_params,
        rows=lambda w: member_of(w).rows,
        stores=lambda w: store_signatures(member_of(w)),
        wildcards=wildcards_json,
    resources:
        gpu=1,
    log:
        "logs/sae_sweep/{exp}/{system}/{member}.log",
    shell:
        "{PY} -m sparsealign sae-sweep --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --rows {params.rows:q} --params {params.sae:q}"
        " --out {output:q} 2>&1 | tee {log:q}"


rule train_sae:
    """Train one SAE (seed, held-out group) on a member's activations or training rows,
    plus the random control; score both on the held-out rows and encode the scored
    stimuli through both (one job: no second start-up per SAE)."""
    input:
        unpack(sweep_inputs),
        stores=lambda w: read_inputs(member_of(w), extra=PLAN.heldout_inputs(
            w.exp, member_of(w), int(w.group))),
    output:
        sae=f"{R}/{{exp}}/sae/{{system}}/{{member}}.g{{group}}.s{{seed}}.sae.pt",
        random=f"{R}/{{exp}}/sae/{{system}}/{{member}}.g{{group}}.s{{seed}}.random.pt",
        history=f"{R}/{{exp}}/sae/{{system}}/{{member}}.g{{group}}.s{{seed}}.history.json",
        latents=directory(f"{R}/{{exp}}/latents/{{system}}/{{member}}.g{{group}}.s{{seed}}.sae.zarr"),
        random_latents=directory(
            f"{R}/{{exp}}/latents/{{system}}/{{member}}.g{{group}}.s{{seed}}.random.zarr"),
    params:
        sae=sae_params,
        activations=lambda w: member_of(w).store,
        stores=lambda w: store_signatures(member_of(w)),
        rows=lambda w: [f"--rows={member_of(w).rows}"] if member_of(w).rows else [],
        heldout=heldout_stores,
        sweep=lambda w, input: [f"--sweep={input.sweep}"] if "sweep" in input.keys() else [],
        wildcards=wildcards_json,
    resources:
        gpu=1,
    log:
        "logs/train_sae/{exp}/{system}/{member}.g{group}.s{seed}.log",
    shell:
        "{PY} -m sparsealign train-sae --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --activations {params.activations:q} {params.rows:q}"
        " {params.heldout:q} {params.sweep:q} --seed {wildcards.seed} --params {params.sae:q}"
        " --sae-out {output.sae:q} --random-out {output.random:q}"
        " --history-out {output.history:q} --latents-out {output.latents:q}"
        " --random-latents-out {output.random_latents:q} 2>&1 | tee {log:q}"
