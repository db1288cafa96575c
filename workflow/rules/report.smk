rule summarise:
    """An experiment's results table, its summary (mean ± SEM over comparisons) and figure."""
    input:
        scores=lambda w: [PLAN.scores(j) for j in PLAN.jobs[w.exp]],
        histories=lambda w: PLAN.histories(w.exp),
    output:
        **{k: f"{R}/{{exp}}/{name}" for k, name in
           (("table", "alignment.csv"), ("summary", "summary.csv"), ("figure", "figure.png"),
            ("quality", "sae_quality.csv"))},
    params:
        panel=lambda w: PLAN.panel(w.exp),
        title=lambda w: config["experiments"][w.exp]["title"] or w.exp,
        wildcards=wildcards_json,
    log:
        "logs/summarise/{exp}.log",
    shell:
        "{PY} -m sparsealign summarise --rule {rule:q} --wildcards {params.wildcards:q}"
        " --scores {input.scores:q} --histories {input.histories:q} --panel {params.panel:q}"
        " --title {params.title:q} --table-out {output.table:q} --summary-out {output.summary:q}"
        " --figure-out {output.figure:q} --quality-out {output.quality:q} 2>&1 | tee {log:q}"


def report_params():
    from sparsealign.plan import mirror_files

    experiments = {name: {"description": e["description"], "panel": PLAN.panel(name)}
                   for name, e in PLAN.experiments.items()}
    return {"experiments": experiments, "mirror_files": mirror_files(config),
            "config_sha": config_sha(config)}


rule report:
    """One self-contained HTML report of every enabled experiment."""
    input:
        summaries=[PLAN.summary_files(e)["summary"] for e in PLAN.experiments],
        figures=[PLAN.summary_files(e)["figure"] for e in PLAN.experiments],
        quality=[PLAN.summary_files(e)["quality"] for e in PLAN.experiments],
        theory=[PLAN.theory_files(e)["figure"] for e in PLAN.experiments if PLAN.theory_files(e)],
        histories=[h for e in PLAN.experiments for h in PLAN.histories(e)],
    output:
        PLAN.report,
    params:
        report=as_json(report_params()),
    log:
        "logs/report.log",
    shell:
        "{PY} -m sparsealign write-report --rule {rule:q} --summaries {input.summaries:q}"
        " --figures {input.figures:q} --histories {input.histories:q} --params {params.report:q}"
        " --out {output:q} 2>&1 | tee {log:q}"
