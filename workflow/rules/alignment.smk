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


def layer_system(exp, net):
    return [
        f"{R}/{exp}/activations/{net}.zarr",
        f"{R}/{exp}/latents/{net}.sae.zarr",
        f"{R}/{exp}/latents/{net}.random.zarr",
    ]


rule align_v4:
    """Neurons / SAE latents / random-SAE latents of one layer → one V4 session."""
    input:
        source=lambda w: layer_system("v4", f"{V4['model']}-{w.layer}"),
        recordings=RECORDINGS,
    output:
        f"{R}/v4/scores/{{layer}}-{{session}}.csv",
    params:
        alignment=as_json(V4["alignment"]),
        labels=lambda w: as_json({"model": V4["model"], "layer": w.layer, "session": w.session}),
        recording=lambda w: f"{RECORDINGS}/{w.session}.zarr",
        repeats=lambda w: f"--repeats {RECORDINGS}/{w.session}_repeats.zarr"
        if w.session in REPEAT_SESSIONS
        else "",
    log:
        "logs/align_v4/{layer}-{session}.log",
    shell:
        "{PY} -m sparsealign align-brain --rule {rule} --source {input.source}"
        " --recording {params.recording} {params.repeats} --target-label V4"
        " --params {params.alignment:q} --labels {params.labels:q} --threads {threads}"
        " --wildcards '{{\"layer\": \"{wildcards.layer}\", \"session\": \"{wildcards.session}\"}}'"
        " --out {output} 2>&1 | tee {log}"


rule align_dnn_pair:
    """Comparison grid between two same-architecture networks at one layer."""
    input:
        a=lambda w: layer_system("dnn", f"{w.a}-{w.layer}"),
        b=lambda w: layer_system("dnn", f"{w.b}-{w.layer}"),
    output:
        f"{R}/dnn/scores/{{layer}}-{{a}}-vs-{{b}}.csv",
    params:
        alignment=as_json(DNN["alignment"]),
        labels=lambda w: as_json({"layer": w.layer, "model_a": w.a, "model_b": w.b}),
    log:
        "logs/align_dnn_pair/{layer}-{a}-vs-{b}.log",
    shell:
        "{PY} -m sparsealign align-pair --rule {rule} --a {input.a} --b {input.b}"
        " --params {params.alignment:q} --labels {params.labels:q} --threads {threads}"
        " --wildcards '{{\"layer\": \"{wildcards.layer}\", \"a\": \"{wildcards.a}\", \"b\": \"{wildcards.b}\"}}'"
        " --out {output} 2>&1 | tee {log}"
