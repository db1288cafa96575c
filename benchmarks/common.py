"""What every benchmark of ``benchmarks/run.py`` shares: result rows, the table, the CSV.

A :class:`Row` is one figure against its baseline measured in the same run: ``ratio`` is
``value / baseline_value`` for throughputs (higher is better) and the goal is a bound on it
(``>= 0.9``, ``<= 1.15``); ``met`` is None where there is no goal or no baseline.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    section: str
    figure: str                  # what was measured
    value: float | None          # the figure (None: not measured, see note)
    unit: str = ""
    baseline: str = ""           # what it is compared with
    baseline_value: float | None = None
    ratio: float | None = None   # value / baseline_value unless given
    goal: str = ""               # ">= 0.9", "<= 1.15" or "" (reported only)
    met: bool | None = None
    note: str = ""

    def __post_init__(self):
        if self.met is not None:
            self.met = bool(self.met)
        if self.ratio is None and self.value is not None and self.baseline_value:
            self.ratio = self.value / self.baseline_value
        if self.met is None and self.goal and self.ratio is not None:
            op, bound = self.goal.split()
            self.met = self.ratio >= float(bound) if op == ">=" else self.ratio <= float(bound)


def unavailable(section: str, figure: str, why: str, goal: str = "") -> Row:
    """A row for a figure that could not be measured here (a peer library missing, …)."""
    return Row(section, figure, None, goal=goal, note=f"not measured: {why}")


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def load_average() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def print_table(rows: list[Row], header: str) -> None:
    print(f"\n{header}")
    columns = ("section", "figure", "value", "baseline", "base value", "ratio", "goal", "met?")
    table = [(r.section, r.figure, f"{_fmt(r.value)} {r.unit}".strip(), r.baseline,
              _fmt(r.baseline_value), _fmt(r.ratio), r.goal or "-",
              "-" if r.met is None else _fmt(r.met)) for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    print(line)
    print("-" * len(line))
    for r, t in zip(rows, table):
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
        if r.note:
            print(" " * (widths[0] + 2) + f"↳ {r.note}")


def git_commit() -> str:
    """The checkout's short commit (with ``+dirty`` if tracked files differ), or ""."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if commit and git("status", "--porcelain", "-uno") else "")
    except OSError:
        return ""


def append_csv(rows: list[Row], mode: str, started: str, load_start: str, load_end: str,
               commit: str, path: Path | None = None) -> Path:
    """Append the rows to ``results/benchmarks.csv`` (one line per row, with the run's
    date, mode, load averages, host and the git commit of its code at the start)."""
    path = path or RESULTS / "benchmarks.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": started, "mode": mode, "load_start": load_start, "load_end": load_end,
            "host": platform.node(), "cores": os.cpu_count(), "commit": commit}
    names = list(meta) + [f.name for f in fields(Row)]
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **asdict(row)})
    return path


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
