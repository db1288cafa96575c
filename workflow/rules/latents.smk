rule latents:
    """Encode the evaluation split of an activations store through the SAE or its control."""
    input:
        activations=f"{R}/{{exp}}/activations/{{net}}.zarr",
        sae=f"{R}/{{exp}}/sae/{{net}}.{{encoder}}.pt",
    output:
        directory(f"{R}/{{exp}}/latents/{{net}}.{{encoder}}.zarr"),
    params:
        sae=sae_params,
    log:
        "logs/latents/{exp}/{net}.{encoder}.log",
    shell:
        "{PY} -m sparsealign latents --rule {rule} --activations {input.activations} --sae {input.sae}"
        " --encoder {wildcards.encoder} --params {params.sae:q}"
        " --wildcards '{{\"exp\": \"{wildcards.exp}\", \"net\": \"{wildcards.net}\", \"encoder\": \"{wildcards.encoder}\"}}'"
        " --out {output} 2>&1 | tee {log}"
