rule latents:
    """Encode a member's scored stimuli through one of its SAEs or the random control."""
    input:
        stores=lambda w: list(member_of(w).inputs)
        + PLAN.heldout_inputs(w.exp, member_of(w), int(w.group)),
        sae=f"{R}/{{exp}}/sae/{{system}}/{{member}}.g{{group}}.s{{seed}}.{{encoder}}.pt",
    output:
        directory(f"{R}/{{exp}}/latents/{{system}}/{{member}}.g{{group}}.s{{seed}}.{{encoder}}.zarr"),
    params:
        sae=sae_params,
        activations=lambda w: member_of(w).store,
        heldout=heldout_stores,
        wildcards=wildcards_json,
    log:
        "logs/latents/{exp}/{system}/{member}.g{group}.s{seed}.{encoder}.log",
    shell:
        "{PY} -m sparsealign latents --rule {rule:q} --wildcards {params.wildcards:q}"
        " --activations {params.activations:q} {params.heldout:q} --sae {input.sae:q}"
        " --encoder {wildcards.encoder} --params {params.sae:q} --out {output:q} 2>&1 | tee {log:q}"
