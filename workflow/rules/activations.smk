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


def extract_outputs(exp, model, layers):
    return [directory(f"{R}/{exp}/activations/{model}-{layer}.zarr") for layer in layers]


rule extract_v4:
    """Activations of the DNN→brain model's layers on the V4 images."""
    output:
        extract_outputs("v4", V4["model"], V4["layers"]),
    params:
        images=image_params(V4),
        out_dir=f"{R}/v4/activations",
        model=V4["model"],
    threads: 2
    log:
        "logs/extract_v4.log",
    shell:
        "{PY} -m sparsealign extract --rule {rule} --model {params.model} --threads {threads}"
        " --params {params.images:q} --out-dir {params.out_dir} 2>&1 | tee {log}"


for _model in DNN["models"]:

    rule:
        name:
            f"extract_dnn_{_model}"
        output:
            extract_outputs("dnn", _model, DNN["layers"]),
        params:
            images=image_params(DNN),
            out_dir=f"{R}/dnn/activations",
            model=_model,
        log:
            f"logs/extract_dnn/{_model}.log",
        shell:
            "{PY} -m sparsealign extract --rule {rule} --model {params.model}"
            " --threads {threads} --wildcards '{{\"model\": \"{params.model}\"}}'"
            " --params {params.images:q} --out-dir {params.out_dir} 2>&1 | tee {log}"
