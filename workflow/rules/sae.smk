def sae_params(wildcards):
    return as_json(config[wildcards.exp]["sae"])


rule train_sae:
    """Train the SAE on an activations store's training split, plus the random control."""
    input:
        f"{R}/{{exp}}/activations/{{net}}.zarr",
    output:
        sae=f"{R}/{{exp}}/sae/{{net}}.sae.pt",
        random=f"{R}/{{exp}}/sae/{{net}}.random.pt",
        history=f"{R}/{{exp}}/sae/{{net}}.history.json",
    params:
        sae=sae_params,
    resources:
        gpu=1,
    log:
        "logs/train_sae/{exp}/{net}.log",
    shell:
        "{PY} -m sparsealign train-sae --rule {rule} --activations {input} --params {params.sae:q}"
        " --threads {threads}"
        " --wildcards '{{\"exp\": \"{wildcards.exp}\", \"net\": \"{wildcards.net}\"}}'"
        " --sae-out {output.sae} --random-out {output.random} --history-out {output.history}"
        " 2>&1 | tee {log}"
