# SAEs: one per (experiment, member), with the experiment's SAE settings, plus its
# untrained random control.


def sae_params(w):
    return as_json(config["experiments"][w.exp]["sae"])


rule train_sae:
    """Train the SAE on a member's activations (training split), plus the random control."""
    input:
        lambda w: PLAN.member(w.system, w.member).store,
    output:
        sae=f"{R}/{{exp}}/sae/{{system}}/{{member}}.sae.pt",
        random=f"{R}/{{exp}}/sae/{{system}}/{{member}}.random.pt",
        history=f"{R}/{{exp}}/sae/{{system}}/{{member}}.history.json",
    params:
        sae=sae_params,
        wildcards=wildcards_json,
    resources:
        gpu=1,
    log:
        "logs/train_sae/{exp}/{system}/{member}.log",
    shell:
        "{PY} -m sparsealign train-sae --rule {rule:q} --wildcards {params.wildcards:q}"
        " --threads {threads} --activations {input:q} --params {params.sae:q}"
        " --sae-out {output.sae:q} --random-out {output.random:q}"
        " --history-out {output.history:q} 2>&1 | tee {log:q}"
