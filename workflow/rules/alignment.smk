def toy_system(hidden, seed, pair):
    net = toy_net(hidden, seed) + f"-pair{pair}"
    return [
        f"{R}/toy/activations/{net}.zarr",
        f"{R}/toy/latents/{net}.sae.zarr",
        f"{R}/toy/latents/{net}.random.zarr",
    ]


rule align_toy_pair:
    """Neuron/SAE/random-SAE comparison grid and ground-truth recovery for one seed pair."""
    input:
        a=lambda w: toy_system(w.hidden, 2 * int(w.pair), w.pair),
        b=lambda w: toy_system(w.hidden, 2 * int(w.pair) + 1, w.pair),
        features=f"{R}/toy/features/pair{{pair}}.zarr",
    output:
        f"{R}/toy/scores/m{{hidden}}-pair{{pair}}.csv",
    params:
        alignment=as_json(TOY["alignment"]),
        labels=lambda w: as_json({"hidden": int(w.hidden), "pair": int(w.pair)}),
    log:
        "logs/align_toy_pair/m{hidden}-pair{pair}.log",
    shell:
        "{PY} -m sparsealign align-pair --rule {rule} --a {input.a} --b {input.b} --features {input.features}"
        " --params {params.alignment:q} --labels {params.labels:q} --threads {threads}"
        " --wildcards '{{\"hidden\": \"{wildcards.hidden}\", \"pair\": \"{wildcards.pair}\"}}'"
        " --out {output} 2>&1 | tee {log}"
