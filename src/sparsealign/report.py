"""Results tables → summaries → figures → one self-contained HTML report.

Numbers shown anywhere in the report are read from the results tables; nothing here
recomputes a score.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

COLOURS = {"Neuron→Neuron": "#7f7f7f", "SAE→Neuron": "#1f77b4", "SAE→SAE": "#2ca02c",
           "RandomSAE→Neuron": "#c5b0d5", "RandomSAE→SAE": "#f7b6d2",
           "GroundTruth→Neuron": "#7f7f7f", "GroundTruth→SAE": "#2ca02c",
           "GroundTruth→RandomSAE": "#f7b6d2"}


def metric_title(metric: str) -> str:
    """A metric's axis title: its registered ``title``, or its name."""
    from sparsealign.align import METRICS

    return getattr(METRICS.get(metric), "title", None) or RECOVERY_TITLES.get(metric, metric)


RECOVERY_TITLES = {"best_corr": "Ground truth: best corr / feature", "mcc": "Ground truth: MCC"}


def is_contrast(comparison: str) -> bool:
    """A paired difference row (``SAE − Neuron`` …), not a score."""
    return "−" in comparison


def baseline_of(comparison: str) -> str:
    """The neuron baseline of a comparison: every SAE side replaced by neurons.

    ``SAE→SAE`` → ``Neuron→Neuron``; ``SAE→<target>`` → ``Neuron→<target>``; ``GroundTruth→SAE`` →
    ``GroundTruth→Neuron``.
    """
    return "→".join("Neuron" if side in ("SAE", "RandomSAE") else side
                    for side in comparison.split("→"))


def summarise_over_pairs(table, group: str = "hidden"):
    """Mean ± SEM over seed pairs of the direction-averaged scores, with relative gains.

    The gain of a comparison is ``score / score(baseline) − 1`` where the baseline is
    :func:`baseline_of` the comparison, within the same group and metric. Ceiling columns,
    where the rows carry them, are averaged the same way.
    """
    import pandas as pd

    both = table[table["direction"].isin(["both", "forward"])]
    summary = (both.groupby([group, "metric", "comparison"], sort=False)["mean"]
               .agg(mean="mean", sem=lambda s: s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else np.nan,
                    n_pairs="count")
               .reset_index())
    baseline_name = summary["comparison"].map(baseline_of)
    lookup = summary.set_index([group, "metric", "comparison"])["mean"]
    baseline = [lookup.get((g, m, b), np.nan) for g, m, b in
                zip(summary[group], summary["metric"], baseline_name)]
    summary["baseline"] = baseline_name
    summary["gain"] = summary["mean"] / pd.Series(baseline, index=summary.index) - 1
    summary.loc[summary["comparison"] == summary["baseline"], "gain"] = 0.0
    for column in ("ceiling", "normalised"):
        if column in both.columns:
            means = both.groupby([group, "metric", "comparison"], sort=False)[column].mean()
            summary[column] = [means.get(key, np.nan) for key in
                               zip(summary[group], summary["metric"], summary["comparison"])]
    if "draws" in both.columns:
        summary = summary.join(_intervals(both, group), on=[group, "metric", "comparison"])
    return summary


def _intervals(rows, group: str):
    """The paired-bootstrap interval of each summary cell: the rows' bootstrap draws
    averaged index by index (sessions or pairs resampled independently), its percentile
    interval, and for contrasts (``SAE − …`` rows) the verdict."""
    import pandas as pd

    from sparsealign.align.bootstrap import aggregate, interval, verdict

    out = {}
    for key, part in rows[rows["draws"].notna()].groupby([group, "metric", "comparison"], sort=False):
        draws = aggregate([np.asarray(json.loads(d), dtype=float) for d in part["draws"]])
        level = float(part["ci_level"].iloc[0]) if "ci_level" in part else 0.95
        low, high = interval(draws, level, float(part["mean"].mean()))
        contrast = "verdict" in part and part["verdict"].notna().any()
        out[key] = {"ci_low": low, "ci_high": high,
                    "verdict": verdict(low, high) if contrast else ""}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=[group, "metric", "comparison"])
    return frame


def paper_figure(summary, out, panel: str = "hidden", title: str = "") -> None:
    """Bars per comparison (mean over pairs/sessions with its 95 % bootstrap interval, or
    ± SEM without one), one row per metric, one column per panel; contrasts are left to
    the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary[~summary["comparison"].map(is_contrast)]
    metrics = list(dict.fromkeys(summary["metric"]))
    panels = sorted(dict.fromkeys(summary[panel]), key=_natural)
    fig, axes = plt.subplots(len(metrics), len(panels), squeeze=False,
                             figsize=(max(6.5, 2.9 * len(panels) + 0.6), 2.5 * len(metrics)))
    for row, metric in enumerate(metrics):
        for col, value in enumerate(panels):
            ax = axes[row][col]
            part = summary[(summary["metric"] == metric) & (summary[panel] == value)]
            x = np.arange(len(part))
            ax.bar(x, part["mean"], yerr=error_bars(part), capsize=3,
                   color=[_colour(c) for c in part["comparison"]])
            for xi, (_, r) in zip(x, part.iterrows()):
                if r["comparison"] != r["baseline"] and np.isfinite(r["gain"]):
                    ax.annotate(f"{r['gain']:+.0%}", (xi, max(r["mean"], 0)), ha="center",
                                va="bottom", fontsize=7, xytext=(0, 4), textcoords="offset points")
            ax.set_xticks(x, [c.replace("→", "→\n") for c in part["comparison"]], fontsize=6.5)
            ax.set_ylim(min(0, float(part["mean"].min()) - 0.05), 1.12)
            ax.axhline(0, color="black", linewidth=0.5)
            if row == 0:
                ax.set_title(f"{panel} = {value}", fontsize=9)
            if col == 0:
                ax.set_ylabel(metric_title(metric), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from sparsealign.atomic import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def error_bars(part):
    """(2, n) error bars: the 95 % bootstrap interval where the rows carry one, else ± SEM."""
    sem = part["sem"].fillna(0).to_numpy()
    low, high = sem.copy(), sem.copy()
    if "ci_low" in part:
        has = np.isfinite(part["ci_low"].to_numpy(dtype=float))
        low[has] = (part["mean"] - part["ci_low"]).to_numpy(dtype=float)[has]
        high[has] = (part["ci_high"] - part["mean"]).to_numpy(dtype=float)[has]
    return np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)])


def _colour(comparison: str) -> str:
    source = comparison.split("→")[0]
    return COLOURS.get(comparison, {"Neuron": "#7f7f7f", "SAE": "#1f77b4"}.get(source, "#c5b0d5"))


def _natural(value):
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def layer_curves(summary, out, group: str = "layer", order=None) -> None:
    """Score per layer (x) for each comparison (lines, ± SEM), one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(summary["metric"]))
    layers = order or list(dict.fromkeys(summary[group]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = summary[summary["metric"] == metric]
        for comparison in [c for c in dict.fromkeys(part["comparison"]) if not is_contrast(c)]:
            rows = part[part["comparison"] == comparison].set_index(group).reindex(layers)
            ax.errorbar(range(len(layers)), rows["mean"], yerr=error_bars(rows), marker="o",
                        markersize=3, capsize=2, color=_colour(comparison), label=comparison)
        ax.set_xticks(range(len(layers)), layers, fontsize=7)
        ax.set_title(metric_title(metric), fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def fraction_curves(summary, out, group: str = "sae_fraction") -> None:
    """The dataset-size ablation: each paired difference (SAE − Neuron, SAE − RandomSAE)
    against the fraction of SAE training rows, with its 95 % bootstrap interval; one
    panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contrasts = summary[summary["comparison"].map(is_contrast)]
    metrics = list(dict.fromkeys(contrasts["metric"]))
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.8 * max(1, len(metrics)), 3),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = contrasts[contrasts["metric"] == metric]
        for i, comparison in enumerate(dict.fromkeys(part["comparison"])):
            rows = part[part["comparison"] == comparison].sort_values(group)
            ax.errorbar(100 * rows[group], rows["mean"], yerr=error_bars(rows), marker="o",
                        markersize=3, capsize=2, label=comparison, color=f"C{i}")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("SAE training rows (%)", fontsize=8)
        ax.set_title(metric_title(metric), fontsize=9)
    axes[0][0].set_ylabel("paired difference (95 % CI)", fontsize=8)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def unit_distributions(table, group: str, focus, out) -> bool:
    """Histograms of per-unit test scores (neurons vs latents) at one panel value.

    Returns False (and draws nothing) when the table has no per-unit scores.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "per_unit" not in table.columns:
        return False
    rows = table[(table[group].astype(str) == str(focus)) & table["per_unit"].notna()
                 & ~table["direction"].isin(["both"])]
    metrics = list(dict.fromkeys(rows["metric"]))
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = rows[rows["metric"] == metric]
        for comparison in dict.fromkeys(part["comparison"]):
            values = [v for cell in part[part["comparison"] == comparison]["per_unit"]
                      for v in json.loads(cell) if v is not None]
            ax.hist(values, bins=30, range=(-0.2, 1), histtype="step", linewidth=1.2,
                    density=True, color=_colour(comparison), label=f"{comparison} (n={len(values)})")
        ax.set_title(f"{metric_title(metric)}: per target unit", fontsize=9)
        ax.set_xlabel("test r", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"{group} = {focus}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def best_layer(summary, group: str = "layer"):
    """The panel value where the neuron baseline scores highest on ridge (else the last)."""
    ridge = summary[(summary["metric"] == "ridge") & (summary["comparison"] == summary["baseline"])]
    if ridge.empty:
        return sorted(dict.fromkeys(summary[group]), key=_natural)[-1]
    return ridge.loc[ridge["mean"].idxmax(), group]


def best_layer_note(summary, group: str = "layer") -> str:
    """One sentence: the best layer for the neuron baseline on ridge, and the SAE there."""
    ridge = summary[(summary["metric"] == "ridge") & ~summary["comparison"].map(is_contrast)]
    neurons = ridge[ridge["comparison"] == ridge["baseline"]]
    if neurons.empty:
        return ""
    best = neurons.loc[neurons["mean"].idxmax()]
    at_best = ridge[ridge[group] == best[group]].set_index("comparison")
    parts = [f"{c}: r = {r['mean']:.3f}" + (f", ceiling-normalised {r['normalised']:.3f}"
                                            if "normalised" in r and np.isfinite(r["normalised"]) else "")
             for c, r in at_best.iterrows()]
    ceiling = (f" Noise ceiling (split-half, Spearman–Brown; sessions with repeats) {best['ceiling']:.3f}."
               if "ceiling" in best and np.isfinite(best["ceiling"]) else "")
    return (f"<p><b>Best {html.escape(group)} for neurons on ridge: {html.escape(str(best[group]))}</b> — "
            f"{html.escape('; '.join(parts))}.{html.escape(ceiling)}</p>")


def training_curves_figure(histories, out) -> None:
    """SAE loss, FVU, L0 and dead fraction over training steps, one line per SAE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "fvu", "l0", "dead_fraction")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6))
    for path in histories:
        curves = json.loads(Path(path).read_text())["curves"]
        for ax, key in zip(axes, keys):
            if key in curves:
                ax.plot(curves["step"], curves[key], linewidth=0.8, alpha=0.7)
    for ax, key in zip(axes, keys):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _img(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def headline_table(summary, group: str = "hidden") -> str:
    """HTML pivot: comparisons × groups, cells ``mean ± sem (gain)``, one table per metric."""
    parts = []
    for metric in dict.fromkeys(summary["metric"]):
        part = summary[summary["metric"] == metric]
        groups = sorted(dict.fromkeys(part[group]), key=_natural)
        head = "".join(f"<th>{html.escape(group)} = {g}</th>" for g in groups)
        rows = []
        for comparison in dict.fromkeys(part["comparison"]):
            cells = []
            for g in groups:
                r = part[(part["comparison"] == comparison) & (part[group] == g)]
                if r.empty:
                    cells.append("<td></td>")
                    continue
                r = r.iloc[0]
                contrast = is_contrast(r["comparison"])
                gain = "" if contrast or r["comparison"] == r["baseline"] else f" ({r['gain']:+.1%})"
                norm = (f"; normalised {r['normalised']:.3f} (ceiling {r['ceiling']:.3f}, "
                        f"sessions with repeats)"
                        if "normalised" in r and np.isfinite(r["normalised"]) else "")
                if "ci_low" in r and np.isfinite(r["ci_low"]):
                    value = f"{r['mean']:+.3f}" if contrast else f"{r['mean']:.3f}"
                    spread = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                else:
                    value, spread = f"{r['mean']:.3f}", f" ± {r['sem']:.3f}"
                verdict = (f" <b>{html.escape(str(r['verdict']))}</b>"
                           if contrast and isinstance(r.get("verdict"), str) and r["verdict"] else "")
                cells.append(f"<td>{value}{spread}{gain}{verdict}{norm}</td>")
            rows.append(f"<tr><th>{html.escape(comparison)}</th>{''.join(cells)}</tr>")
        parts.append(f"<h3>{html.escape(metric_title(metric))}</h3>"
                     f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    return "\n".join(parts)


def quality_table(path) -> str:
    """HTML: each member's SAEs on held-out rows (mean over seeds and groups; dead: the
    worst SAE), beside the random control's FVU."""
    import pandas as pd

    if not Path(path).exists():
        return ""
    table = pd.read_csv(path)
    if table.empty or "heldout_fvu" not in table:
        return ""
    rows = []
    for (system, member), part in table.groupby(["system", "member"], sort=False):
        random = (f"{part['random_heldout_fvu'].mean():.3f}"
                  if "random_heldout_fvu" in part else "—")
        rows.append(f"<tr><td>{html.escape(f'{system}.{member}')}</td><td>{len(part)}</td>"
                    f"<td>{int(part['n_train'].mean())}</td><td>{part['k'].iloc[0]}</td>"
                    f"<td>{part['heldout_fvu'].mean():.3f}</td><td>{part['heldout_l0'].mean():.1f}</td>"
                    f"<td>{part['heldout_dead_fraction'].max():.3f}</td><td>{random}</td></tr>")
    return ("<h3>SAEs on held-out rows (never trained on)</h3><table><tr><th>member</th>"
            "<th>SAEs</th><th>training rows</th><th>k</th><th>FVU</th><th>L0</th>"
            "<th>dead fraction (worst)</th><th>random-SAE FVU</th></tr>" + "".join(rows) + "</table>")


def theory_section(folder: Path) -> str:
    """The toy theory figure and its per-m table, when the experiment has one."""
    import pandas as pd

    figure, table = folder / "theory.png", folder / "theory.csv"
    if not (figure.exists() and table.exists()):
        return ""
    theory = pd.read_csv(table)
    columns = {"n_represented_a": "represented (A)", "n_represented_b": "represented (B)",
               "n_shared": "shared", "arrangement_semi_matching": "arrangement semi-matching",
               "predicted_semi_matching": "predicted Neuron→Neuron semi-matching",
               "measured_semi_matching": "measured", "predicted_vs_measured_r": "matrix r"}
    means = theory.groupby("hidden")[list(columns)].mean()
    head = "".join(f"<th>{html.escape(v)}</th>" for v in columns.values())
    rows = "".join(f"<tr><th>m = {h}</th>" + "".join(f"<td>{v:.3f}</td>" for v in r) + "</tr>"
                   for h, r in means.iterrows())
    return (f"<h3>The paper's theory on these models</h3><p>Mean over seed pairs. "
            f"{html.escape(str(theory['method'].iloc[0]))}; features represented when ‖W_i‖ > "
            f"{theory['threshold'].iloc[0]}.</p>{_img(figure)}"
            f"<table><tr><th></th>{head}</tr>{rows}</table>")


def stage_costs_table() -> str:
    """HTML: the job time of each stage of this invocation so far (MLflow), if tracked."""
    from sparsealign.tracking import parent_run_id
    from sparsealign.tracking.costs import stage_costs

    try:
        rows = stage_costs(parent_run_id())
    except Exception:  # the report must not fail because a tracking server is away
        return ""
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(r['stage'])}</td><td>{r['jobs']}</td>"
                   f"<td>{r['seconds'] / 60:.1f}</td><td>{r['share']:.0%}</td></tr>" for r in rows)
    return ("<p>Summed wall time of this invocation's finished jobs, by rule (jobs run in "
            "parallel, so the sum exceeds the elapsed time).</p><table><tr><th>stage</th>"
            f"<th>jobs</th><th>minutes</th><th>share</th></tr>{body}</table>")


def job_runs(paths) -> dict:
    """file → (rule, MLflow run id) of the job whose logged output hash matches it now."""
    from sparsealign import provenance, tracking

    if not tracking.enabled() or not paths:
        return {}
    wanted = {str(p): provenance.path_md5(p) for p in paths if Path(p).exists()}
    found = {}
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking.tracking_uri())
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, "tags.`sparsealign.role` = 'job'",
                                  max_results=5000, order_by=["attributes.start_time DESC"])
    except Exception:  # the report must not fail because a tracking server is away
        return {}
    for run in runs:
        for key, value in run.data.tags.items():
            path = key.removeprefix("output_md5.")
            if path != key and wanted.get(path) == value and path not in found:
                found[path] = (run.data.tags.get("snakemake.rule", "?"), run.info.run_id)
    return dict(sorted(found.items()))


def raw_data_hashes(mirror_files) -> dict:
    """sha256 (from the mirror's SHA256SUMS) of each mirror file the experiments read."""
    from sparsealign.stimuli.mirror import default_mirror_dir, read_checksums

    if not mirror_files:
        return {}
    sums = read_checksums(default_mirror_dir())
    return {name: sums[name] for name in mirror_files if name in sums}


def write_report(out, summaries, figures, histories=(), experiments=None, mirror_files=(),
                 config_sha: str = "") -> None:
    """One HTML file, figures embedded, readable offline.

    ``experiments`` maps an experiment name (the folder of its summary) to its
    ``description`` and ``panel``.
    """
    import tempfile

    from sparsealign.atomic import write_text

    with tempfile.TemporaryDirectory() as tmp:  # figures drawn here are embedded, not kept
        page = _page(Path(tmp), summaries, figures, histories, experiments or {}, mirror_files,
                     config_sha)
    write_text(out, page)


def _page(scratch: Path, summaries, figures, histories, experiments, mirror_files,
          config_sha) -> str:
    import pandas as pd

    from sparsealign.provenance import git_state
    from sparsealign.tracking import parent_run_id

    sections = []
    for summary_path, figure in zip(summaries, figures):
        summary = pd.read_csv(summary_path)
        name = Path(summary_path).parent.name
        group = experiments.get(name, {}).get("panel", summary.columns[0])
        extra = ""
        if group == "layer":
            curves = scratch / f"{name}_layers.png"
            layer_curves(summary, curves, group)
            extra = f"<h3>Per-layer curves</h3>{_img(curves)}{best_layer_note(summary, group)}"
        elif group == "sae_fraction":
            curves = scratch / f"{name}_fractions.png"
            fraction_curves(summary, curves, group)
            extra = f"<h3>Gain against the size of the SAE's training set</h3>{_img(curves)}"
        focus = best_layer(summary, group) if group == "layer" else \
            sorted(dict.fromkeys(summary[group]), key=_natural)[-1]
        table_path = Path(summary_path).with_name("alignment.csv")
        units = scratch / f"{name}_units.png"
        if table_path.exists() and unit_distributions(pd.read_csv(table_path), group, focus, units):
            extra += f"<h3>Per-unit score distributions (neurons vs latents)</h3>{_img(units)}"
        sections.append(f"<section><h2>Experiment: {html.escape(name)}</h2>"
                        f"<p>{html.escape(experiments.get(name, {}).get('description', ''))} Relative gain versus "
                        f"the neuron baseline in brackets. Source: "
                        f"<code>{html.escape(str(summary_path))}</code>.</p>"
                        f"{_img(figure)}{extra}{headline_table(summary, group)}"
                        f"{quality_table(Path(summary_path).with_name('sae_quality.csv'))}"
                        f"{theory_section(Path(summary_path).parent)}</section>")
    if histories:
        curves = scratch / "sae_training_curves.png"
        training_curves_figure(histories, curves)
        sections.append(f"<section><h2>SAE training curves</h2>{_img(curves)}</section>")
    costs = stage_costs_table()
    if costs:
        sections.append(f"<section><h2>Cost of each stage</h2>{costs}</section>")
    state = git_state()
    provenance = {"git commit": state["git_commit"], "git dirty": state["git_dirty"],
                  "config sha": config_sha or "—", "MLflow parent run": parent_run_id() or "—"}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                   for k, v in provenance.items())
    produced = [Path(p) for summary in summaries for p in sorted(Path(summary).parent.glob("scores/*.csv"))]
    produced += [Path(p) for p in summaries] + [Path(p) for p in histories]
    jobs = "".join(f"<tr><td><code>{html.escape(str(path))}</code></td><td>{html.escape(rule)}</td>"
                   f"<td><code>{html.escape(run_id)}</code></td></tr>"
                   for path, (rule, run_id) in job_runs(produced).items())
    raw = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td><code>{digest}</code></td></tr>"
                  for name, digest in raw_data_hashes(mirror_files).items())
    sections.append(f"<section><h2>Provenance</h2><table>{rows}</table>"
                    f"<h3>Raw data (sha256, verified against the mirror before use)</h3>"
                    f"<table>{raw or '<tr><td>none: generated data only</td></tr>'}</table>"
                    f"<h3>The MLflow run of every job that produced a number here</h3>"
                    f"<table><tr><th>file</th><th>rule</th><th>run id</th></tr>"
                    f"{jobs or '<tr><td colspan=3>MLflow tracking off or unavailable</td></tr>'}"
                    f"</table></section>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sparsealign report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1.2em}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
img{{max-width:100%}}</style></head><body>
<h1>sparsealign: does superposition hide alignment?</h1>
{''.join(sections)}
</body></html>"""
