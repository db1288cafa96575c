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


rule import_v4:
    """Verify every V4 session against the mirror's SHA256SUMS and convert it to stores."""
    output:
        directory(RECORDINGS),
    params:
        data=as_json({"mirror": MIRROR, "sessions": list(COWLEY_V4_SESSIONS)}),
    log:
        "logs/import_v4.log",
    shell:
        "{PY} -m sparsealign import-recordings --rule {rule} --dataset cowley2023_v4"
        " --params {params.data:q} --out {output} 2>&1 | tee {log}"
