"""What each stage of one pipeline invocation cost: its jobs' wall time, by rule, read back
from the MLflow child runs of the invocation's parent run."""

from __future__ import annotations

from sparsealign.tracking.client import enabled, open_client


def stage_costs(run_id: str | None) -> list[dict]:
    """``[{stage, jobs, seconds, share}]`` for the finished jobs of a parent run, costliest
    first; ``share`` is of the summed job time. Empty when tracking is off or unknown."""
    if not (enabled() and run_id):
        return []
    client = open_client()
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                  max_results=50000)
    per_rule = {}
    for run in children:
        if run.info.end_time is None:
            continue
        jobs, seconds = per_rule.get(run.data.tags.get("snakemake.rule", "?"), (0, 0.0))
        per_rule[run.data.tags.get("snakemake.rule", "?")] = (
            jobs + 1, seconds + (run.info.end_time - run.info.start_time) / 1000)
    total = sum(seconds for _, seconds in per_rule.values()) or 1.0
    return [{"stage": rule, "jobs": jobs, "seconds": seconds, "share": seconds / total}
            for rule, (jobs, seconds) in sorted(per_rule.items(), key=lambda item: -item[1][1])]


def format_costs(rows: list[dict]) -> str:
    """A plain-text table of :func:`stage_costs` (job time: parallel jobs add up)."""
    if not rows:
        return ""
    lines = ["cost of each stage (summed job wall time; jobs run in parallel):",
             f"  {'stage':<18}{'jobs':>6}{'minutes':>10}{'share':>8}"]
    lines += [f"  {r['stage']:<18}{r['jobs']:>6}{r['seconds'] / 60:>10.1f}{r['share']:>8.0%}"
              for r in rows]
    return "\n".join(lines)
