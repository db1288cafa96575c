rule toy_model:
    """Train one toy model of superposition; store its neurons' held-out activations."""
    input:
        features=f"{R}/toy/features/pair{{pair}}.zarr",
    output:
        model=f"{R}/toy/models/m{{hidden}}-seed{{seed}}-pair{{pair}}.pt",
        activations=directory(f"{R}/toy/activations/m{{hidden}}-seed{{seed}}-pair{{pair}}.zarr"),
    params:
        toy=as_json({k: v for k, v in TOY.items() if k not in ("sae", "alignment")}),
    log:
        "logs/toy_model/m{hidden}-seed{seed}-pair{pair}.log",
    shell:
        "{PY} -m sparsealign toy-model --rule {rule} --features {input.features} --hidden {wildcards.hidden}"
        " --seed {wildcards.seed} --pair {wildcards.pair} --params {params.toy:q}"
        " --threads {threads}"
        " --wildcards '{{\"hidden\": \"{wildcards.hidden}\", \"seed\": \"{wildcards.seed}\", \"pair\": \"{wildcards.pair}\"}}'"
        " --model-out {output.model} --out {output.activations} 2>&1 | tee {log}"
