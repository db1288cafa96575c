TOY_SCORES = [f"{R}/toy/scores/m{m}-pair{p}.csv" for m in TOY["hidden_sizes"] for p in toy_pairs()]
TOY_HISTORIES = [
    f"{R}/toy/sae/{toy_net(m, 2 * p + s)}-pair{p}.history.json"
    for m in TOY["hidden_sizes"]
    for p in toy_pairs()
    for s in (0, 1)
]


rule summarise_toy:
    """The toy results table (one row per size × pair × comparison × metric) and figure."""
    input:
        TOY_SCORES,
    output:
        table=f"{R}/toy/alignment.csv",
        summary=f"{R}/toy/summary.csv",
        figure=f"{R}/toy/figure.png",
    log:
        "logs/summarise_toy.log",
    shell:
        "{PY} -m sparsealign summarise --rule {rule} --scores {input} --group hidden"
        " --title 'Toy models of superposition: neurons vs SAE latents'"
        " --table-out {output.table} --summary-out {output.summary}"
        " --figure-out {output.figure} 2>&1 | tee {log}"


rule report:
    """One self-contained HTML report of every experiment."""
    input:
        summaries=[f"{R}/toy/summary.csv"],
        figures=[f"{R}/toy/figure.png"],
        histories=TOY_HISTORIES,
    output:
        REPORT,
    params:
        config=as_json(config),
    log:
        "logs/report.log",
    shell:
        "{PY} -m sparsealign write-report --rule {rule} --summaries {input.summaries} --figures {input.figures}"
        " --histories {input.histories} --params {params.config:q} --out {output} 2>&1 | tee {log}"
