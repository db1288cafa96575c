rule latents:
    """Encode the evaluation split of a member's activations through its SAE or the control."""
    input:
        activations=lambda w: PLAN.member(w.system, w.member).store,
        sae=f"{R}/{{exp}}/sae/{{system}}/{{member}}.{{encoder}}.pt",
    output:
        directory(f"{R}/{{exp}}/latents/{{system}}/{{member}}.{{encoder}}.zarr"),
    params:
        sae=sae_params,
        wildcards=wildcards_json,
    log:
        "logs/latents/{exp}/{system}/{member}.{encoder}.log",
    shell:
        "{PY} -m sparsealign latents --rule {rule:q} --wildcards {params.wildcards:q}"
        " --activations {input.activations:q} --sae {input.sae:q} --encoder {wildcards.encoder}"
        " --params {params.sae:q} --out {output:q} 2>&1 | tee {log:q}"
