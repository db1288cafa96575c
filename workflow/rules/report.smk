def toy_histories():
    return [
        f"{R}/toy/sae/{toy_net(m, 2 * p + s)}-pair{p}.history.json"
        for m in TOY["hidden_sizes"]
        for p in toy_pairs()
        for s in (0, 1)
    ]


# experiment → (score tables, the column that makes the figure's panels, figure title, SAE histories)
EXPERIMENTS = {}
if TOY["enabled"]:
    EXPERIMENTS["toy"] = (
        [f"{R}/toy/scores/m{m}-pair{p}.csv" for m in TOY["hidden_sizes"] for p in toy_pairs()],
        "hidden",
        "Toy models of superposition: neurons vs SAE latents (panels: hidden size m)",
        toy_histories(),
    )
if V4["enabled"]:
    EXPERIMENTS["v4"] = (
        [f"{R}/v4/scores/{layer}-{s}.csv" for layer in V4["layers"] for s in V4_SESSIONS],
        "layer",
        f"DNN→brain: {V4['model']} layers → macaque V4 (mean ± SEM over sessions)",
        [f"{R}/v4/sae/{V4['model']}-{layer}.history.json" for layer in V4["layers"]],
    )
if DNN["enabled"]:
    EXPERIMENTS["dnn"] = (
        [
            f"{R}/dnn/scores/{layer}-{a}-vs-{b}.csv"
            for layer in DNN["layers"]
            for a, b in dnn_pairs()
        ],
        "layer",
        "DNN→DNN: Cowley et al. compact models from different teachers (mean ± SEM over pairs)",
        [f"{R}/dnn/sae/{m}-{layer}.history.json" for m in DNN["models"] for layer in DNN["layers"]],
    )


rule summarise:
    """An experiment's results table, its summary over seed pairs / sessions / model pairs, and figures."""
    input:
        lambda w: EXPERIMENTS[w.exp][0],
    output:
        table=f"{R}/{{exp}}/alignment.csv",
        summary=f"{R}/{{exp}}/summary.csv",
        figure=f"{R}/{{exp}}/figure.png",
    params:
        group=lambda w: EXPERIMENTS[w.exp][1],
        title=lambda w: EXPERIMENTS[w.exp][2],
    log:
        "logs/summarise/{exp}.log",
    shell:
        "{PY} -m sparsealign summarise --rule {rule} --scores {input} --group {params.group}"
        " --wildcards '{{\"exp\": \"{wildcards.exp}\"}}' --title {params.title:q}"
        " --table-out {output.table} --summary-out {output.summary}"
        " --figure-out {output.figure} 2>&1 | tee {log}"


rule report:
    """One self-contained HTML report of every experiment."""
    input:
        summaries=[f"{R}/{exp}/summary.csv" for exp in EXPERIMENTS],
        figures=[f"{R}/{exp}/figure.png" for exp in EXPERIMENTS],
        histories=[h for spec in EXPERIMENTS.values() for h in spec[3]],
    output:
        REPORT,
    params:
        config=as_json(config),
    log:
        "logs/report.log",
    shell:
        "{PY} -m sparsealign write-report --rule {rule} --summaries {input.summaries}"
        " --figures {input.figures} --histories {input.histories} --params {params.config:q}"
        " --out {output} 2>&1 | tee {log}"
