rule toy_data:
    """Held-out feature vectors of one seed pair: the stimuli every toy model is shown."""
    output:
        directory(f"{R}/toy/features/pair{{pair}}.zarr"),
    params:
        toy=as_json({k: v for k, v in TOY.items() if k not in ("sae", "alignment")}),
    log:
        "logs/toy_data/pair{pair}.log",
    shell:
        "{PY} -m sparsealign toy-data --rule {rule} --pair {wildcards.pair} --params {params.toy:q}"
        " --wildcards '{{\"pair\": \"{wildcards.pair}\"}}' --out {output} 2>&1 | tee {log}"
