#!/usr/bin/env python
"""Kill the pipeline at random points, recover, and compare with a clean run.

    nice python scripts/fault_inject.py                       # default config, 20 kills
    python scripts/fault_inject.py --configfile config/smoke.yaml --kills 20 --cores 2

1. Snapshots the repository (Snakefile, workflow/, config/, src/) into a scratch folder,
   so edits made meanwhile do not leak in; jobs import the snapshot's ``src``.
2. Clean run: Snakemake to the end; md5 of every declared output (a Zarr store hashes as
   its files, without Snakemake's empty timestamp marker; ``report.html`` with the MLflow
   run id it records as provenance masked) and the time each output was finished.
   ``--reference FILE`` reuses what a previous run saved instead.
3. Chaos run, in another copy. ``--kills`` points are drawn uniformly over the clean run's
   duration. For each, the user's command (``sparsealign run --config …``, nothing added)
   is started and SIGKILLed, with Snakemake and all its jobs (their session: what a power
   cut or an OOM-killed session does), once it has finished the outputs the clean run had
   finished by then and has run as long again as the clean run had run past its last
   finished output: the kills land on the jobs in flight at that point, startup and
   ``onstart`` included, and a kill never stops the pipeline from progressing. The next
   start is the same command, with no manual step between (no ``--unlock``). Then a last
   run to the end.
4. After every kill, every declared output that exists and that Snakemake has not marked
   incomplete is one Snakemake would use as it is: it must equal the clean run's (else it
   counts as corrupted). At the end every output must equal the clean run's, no
   ``*.tmp-*`` temporaries may remain, and MLflow must hold no RUNNING run.

Prints the figures and writes them to ``<scratch>/fault_report.json``. ``--budget-s``
bounds the whole thing: once spent, no more kills are made.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sparsealign.provenance import path_md5

REPO = Path(__file__).resolve().parents[1]
RUN_ID = re.compile(rb"\b[0-9a-f]{32}\b")
# What names the run or the code version rather than the result: the report's MLflow run
# ids and git state, and the commit in a store's `created_by` (a --clean-dir reference
# may come from another checkout of the same code).
REPORT_GIT = re.compile(rb"(git commit|git dirty)</th><td><code>[^<]*")
# The report's table of this invocation's job times (by design, not a result).
REPORT_COSTS = re.compile(rb"<section><h2>Cost of each stage</h2>.*?</section>", re.S)
CREATED_BY = re.compile(rb'("created_by": "sparsealign [^"(]*)\([^)"]*\)')


def _mask(file: Path, data: bytes) -> bytes:
    if file.suffix == ".html":
        data = REPORT_COSTS.sub(b"<costs>", data)
        return REPORT_GIT.sub(rb"\1</th><td><code>", RUN_ID.sub(b"<run id>", data))
    if file.name == "zarr.json":
        return CREATED_BY.sub(rb"\1(<commit>)", data)
    return data


def md5_path(path: Path) -> str:
    """:func:`~sparsealign.provenance.path_md5`, with run ids and code versions masked."""
    return path_md5(path, normalise=_mask)


def snapshot(dest: Path, configfile: str) -> str:
    """Copy what a run needs into ``dest``; return the config file's path inside it."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for name in ("workflow", "config"):
        shutil.copytree(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / configfile).is_file():
        return configfile
    outside = Path(configfile)  # a config file from elsewhere travels with the copy
    shutil.copy(outside, dest / "config" / outside.name)
    return f"config/{outside.name}"


def environment(work: Path, src: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}",
               SPARSEALIGN_TRACKING="on", PYTHONWARNINGS="ignore",
               # Real SAE jobs train for seconds: checkpoint often, so kills find one.
               SPARSEALIGN_CHECKPOINT_SECONDS="2",
               MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlruns/mlflow.db",
               SPARSEALIGN_DATA_MIRROR=os.environ.get(
                   "SPARSEALIGN_DATA_MIRROR", str((REPO.parent / "shared" / "data").resolve())))
    env.pop("SPARSEALIGN_PARENT_RUN_ID", None)
    return env


class Pipeline:
    def __init__(self, work: Path, src: Path, configfile: str, cores: int):
        self.work, self.configfile, self.cores = work, configfile, cores
        self.env = environment(work, src)
        self.snakemake = [sys.executable, "-m", "snakemake", "--configfile", configfile]
        # Exactly what the user types, to run and to recover.
        self.command = [sys.executable, "-m", "sparsealign", "run", "--config", configfile,
                        "--cores", str(cores)]

    def start(self, log: Path) -> subprocess.Popen:
        with open(log, "w") as handle:
            return subprocess.Popen(self.command, cwd=self.work, env=self.env, stdout=handle,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def call(self, *args) -> subprocess.CompletedProcess:
        """A Snakemake query (``--summary``) that runs no job."""
        return subprocess.run(self.snakemake + list(args), cwd=self.work, env=self.env,
                              capture_output=True, text=True)

    def outputs(self) -> list[str]:
        """Every declared output of the DAG (``snakemake --summary``)."""
        proc = self.call("--summary")
        if proc.returncode:
            raise RuntimeError(f"snakemake --summary failed: {proc.stderr[-2000:]}")
        lines = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
        return [row[0] for row in lines[1:]]

    def incomplete(self) -> set[str]:
        """Outputs Snakemake marked incomplete (base64 names, split into folders when long)."""
        marks = self.work / ".snakemake" / "incomplete"
        found = set()
        for mark in marks.rglob("*") if marks.exists() else []:
            if mark.is_file():
                try:
                    found.add(base64.urlsafe_b64decode("".join(mark.relative_to(marks).parts)).decode())
                except ValueError:
                    continue
        return found

    def completed(self, outputs) -> int:
        """How many of ``outputs`` exist and are not marked incomplete."""
        incomplete = self.incomplete()
        return sum(1 for o in outputs if o not in incomplete and (self.work / o).exists())

    def mlflow_runs(self, experiment: str):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name(experiment)
        return client.search_runs([exp.experiment_id], max_results=50000) if exp else []


def running_stages(proc: subprocess.Popen) -> list[str]:
    """The sparsealign stages running under ``proc`` (where the kill lands)."""
    import psutil

    stages = []
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return stages
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "sparsealign" in cmd and "-m" in cmd:
            after = cmd[cmd.index("sparsealign") + 1:]
            if after and not after[0].startswith("-"):
                stages.append(after[0])
    return stages


def kill_all(proc: subprocess.Popen) -> None:
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def experiment_name(work: Path, configfile: str) -> str:
    import yaml

    name = "sparsealign"
    for file in (work / "config" / "config.yaml", work / configfile):
        if file.is_file():
            name = (yaml.safe_load(file.read_text()) or {}).get("mlflow_experiment", name)
    return name


def results_dir(work: Path, configfile: str) -> Path:
    import yaml

    name = "results"
    for file in (work / "config" / "config.yaml", work / configfile):
        if file.is_file():
            name = (yaml.safe_load(file.read_text()) or {}).get("results_dir", name)
    return work / name


def finished_at(path: Path) -> float:
    """When a job finished writing ``path`` (a directory output: Snakemake's marker in it)."""
    marker = path / ".snakemake_timestamp"
    return (marker if marker.exists() else path).stat().st_mtime


def clean_run(args, scratch: Path) -> dict:
    work = scratch / "clean"
    configfile = snapshot(work, args.configfile)
    pipeline = Pipeline(work, work / "src", configfile, args.cores)
    print(f"clean run in {work} …", flush=True)
    start, wall_start = time.monotonic(), time.time()
    proc = pipeline.start(scratch / "clean.log")
    code = proc.wait()
    seconds = time.monotonic() - start
    if code:
        raise SystemExit(f"clean run failed ({code}); see {scratch / 'clean.log'}")
    outputs = pipeline.outputs()
    hashes = {o: md5_path(work / o) for o in outputs}
    reference = {"configfile": args.configfile, "seconds": seconds, "hashes": hashes,
                 "finished_at": {o: finished_at(work / o) - wall_start for o in outputs}}
    (scratch / "clean_hashes.json").write_text(json.dumps(reference, indent=1))
    return reference


def reference_from(clean_dir: Path, args) -> dict:
    """The reference of a pipeline already run to the end in ``clean_dir`` (a checkout),
    timed from its first Snakemake log."""
    pipeline = Pipeline(clean_dir, clean_dir / "src", args.configfile, args.cores)
    logs = sorted((clean_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"{clean_dir}: no .snakemake/log/*.snakemake.log to time the run from")
    start = time.mktime(time.strptime(logs[0].name.split(".")[0], "%Y-%m-%dT%H%M%S"))
    outputs = pipeline.outputs()
    finished = {o: finished_at(clean_dir / o) - start for o in outputs}
    return {"configfile": args.configfile, "seconds": max(finished.values()),
            "hashes": {o: md5_path(clean_dir / o) for o in outputs}, "finished_at": finished}


def chaos_run(args, scratch: Path, reference: dict, deadline: float) -> dict:
    work = scratch / "chaos"
    configfile = snapshot(work, args.configfile)
    pipeline = Pipeline(work, work / "src", configfile, args.cores)
    clean = reference["hashes"]
    rng = random.Random(args.seed)
    finish = sorted(reference["finished_at"].values())
    points = sorted(rng.uniform(0, reference["seconds"]) for _ in range(args.kills))
    figures = {"kills": 0, "recovered": 0, "restart_failures": 0, "completed_early": False,
               "corrupted": [], "landed": Counter(), "checks_after_kill": 0,
               "with_checkpoint": 0}
    attempt, after_kill = 0, False
    print(f"chaos run in {work}: {args.kills} kills at {', '.join(f'{t:.0f}' for t in points)} s "
          "of the clean run's timeline", flush=True)
    for point in points:
        if time.monotonic() > deadline:
            print("time budget spent: no more kills", flush=True)
            break
        done = sum(1 for t in finish if t <= point)  # outputs finished by then
        extra = point - max([t for t in finish if t <= point], default=0.0)
        attempt += 1
        log = scratch / f"chaos-{attempt:03d}.log"
        proc = pipeline.start(log)
        started = time.monotonic()
        while proc.poll() is None and pipeline.completed(clean) < done:
            time.sleep(0.2)
        reached = max(started, time.monotonic() - 0.2)
        while proc.poll() is None and time.monotonic() < reached + extra:
            time.sleep(0.05)
        if figures["with_checkpoint"] < args.checkpoint_kills:
            # A kill that finds SAE training running waits (≤ 60 s) for its checkpoint, so
            # that resume is exercised: real SAE jobs train for seconds, and start slowly.
            wait_until = time.monotonic() + 60
            while (proc.poll() is None and time.monotonic() < wait_until
                   and "train-sae" in running_stages(proc)
                   and not any(results_dir(work, configfile).rglob("*.ckpt"))):
                time.sleep(0.2)
        if proc.poll() is None:
            stages = running_stages(proc)
            kill_all(proc)
            checkpoints = sorted(results_dir(work, configfile).rglob("*.ckpt"))
            figures["with_checkpoint"] += bool("train-sae" in stages and checkpoints)
            # This run did not fail on its own up to the kill: the previous kill recovered.
            figures["recovered"] += after_kill
            figures["kills"] += 1
            after_kill = True
            where = " + ".join(sorted(set(stages))) or "startup/scheduling"
            figures["landed"][where] += 1
            bad = check_survivors(pipeline, clean)
            figures["checks_after_kill"] += 1
            figures["corrupted"] += [f"after kill {figures['kills']}: {b}" for b in bad]
            print(f"kill {figures['kills']:2d} at {time.monotonic() - started:6.1f} s into run "
                  f"{attempt} (clean timeline {point:.0f} s) during {where}; "
                  f"{len(checkpoints)} SAE checkpoint(s) on disk; survivors "
                  + (f"CORRUPTED: {bad}" if bad else "ok"), flush=True)
            continue
        if proc.returncode == 0:
            figures["completed_early"] = True
            figures["recovered"] += after_kill
            break
        figures["restart_failures"] += 1
        after_kill = False
        print(f"run {attempt} failed on its own ({proc.returncode}); see {log}", flush=True)
    if not figures["completed_early"]:
        proc = pipeline.start(scratch / "chaos-final.log")
        code = proc.wait()
        if code == 0:
            figures["recovered"] += after_kill
        else:
            figures["restart_failures"] += 1
            print(f"final run failed ({code}); see {scratch / 'chaos-final.log'}", flush=True)
    figures["resumed"] = sum(log.read_text(errors="replace").count("resuming from ")
                             for log in scratch.glob("chaos-*.log"))
    final = {o: md5_path(work / o) if (work / o).exists() else None for o in clean}
    figures["identical"] = sorted(o for o, h in final.items() if h == clean[o])
    figures["different"] = sorted(o for o, h in final.items() if h != clean[o])
    root = results_dir(work, configfile)
    figures["temporaries_left"] = sorted(str(p.relative_to(work)) for p in root.rglob("*")
                                         if ".tmp" in p.name or ".old-" in p.name)
    runs = pipeline.mlflow_runs(experiment_name(work, configfile))
    figures["mlflow"] = Counter((r.data.tags.get("sparsealign.role", "?"), r.info.status,
                                 "reaped" if "sparsealign.reaped" in r.data.tags else "")
                                for r in runs)
    figures["files"] = sum(1 for o in clean for p in ([work / o] if (work / o).is_file()
                                                      else (work / o).rglob("*"))
                           if p.is_file() and p.name != ".snakemake_timestamp")
    return figures


def check_survivors(pipeline: Pipeline, clean: dict) -> list[str]:
    """Outputs Snakemake would use as they are (exist, not marked incomplete) that differ."""
    incomplete = pipeline.incomplete()
    bad = []
    for output, digest in clean.items():
        path = pipeline.work / output
        if path.exists() and output not in incomplete and md5_path(path) != digest:
            bad.append(output)
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--checkpoint-kills", type=int, default=3,
                        help="until this many kills found SAE training with a checkpoint, a kill "
                        "that finds SAE training waits for its checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=4 * 3600, help="stop killing after this")
    parser.add_argument("--reference", help="clean_hashes.json from an earlier run (skips the clean run)")
    parser.add_argument("--clean-dir", help="a checkout where the pipeline already ran to the end "
                        "(e.g. the README's first command): its outputs are the reference")
    parser.add_argument("--scratch", help="folder for the copies (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    started = time.monotonic()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="sparsealign-faults-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        if args.reference:
            reference = json.loads(Path(args.reference).read_text())
        elif args.clean_dir:
            reference = reference_from(Path(args.clean_dir).resolve(), args)
            (scratch / "clean_hashes.json").write_text(json.dumps(reference, indent=1))
        else:
            reference = clean_run(args, scratch)
        figures = chaos_run(args, scratch, reference, started + args.budget_s)
        elapsed = time.monotonic() - started
        outputs = len(reference["hashes"])
        mlflow = figures["mlflow"]
        failed_pipelines = sum(n for (role, status, _), n in mlflow.items() if role == "pipeline" and status == "FAILED")
        failed_jobs = sum(n for (role, status, _), n in mlflow.items() if role == "job" and status == "FAILED")
        running = sum(n for (_, status, _), n in mlflow.items() if status == "RUNNING")
        lines = [
            f"fault injection: {args.configfile}, --cores {args.cores}, seed {args.seed}: SIGKILL to "
            "sparsealign run, Snakemake and all its jobs; recovery = the same command again",
            f"clean run: {reference['seconds']:.0f} s, {outputs} declared outputs ({figures['files']} files)",
            f"kills: {figures['kills']}; landed during: "
            + "; ".join(f"{stage} ×{n}" for stage, n in figures["landed"].most_common()),
            f"kills during SAE training with a checkpoint on disk: {figures['with_checkpoint']}; "
            f"SAE jobs resumed from a checkpoint: {figures['resumed']}",
            f"runs recovered: {figures['recovered']}/{figures['kills']} "
            f"(restarts that failed on their own: {figures['restart_failures']})",
            f"outputs identical to the clean run (md5): {len(figures['identical'])}/{outputs}"
            + (f"; different: {figures['different']}" if figures["different"] else ""),
            f"corrupted outputs (used as complete but different from the clean run), checked after "
            f"each of {figures['checks_after_kill']} kills: {len(figures['corrupted'])}"
            + (f" {figures['corrupted']}" if figures["corrupted"] else ""),
            f"temporaries left in the results: {len(figures['temporaries_left'])}",
            f"MLflow: {failed_pipelines} pipeline and {failed_jobs} job runs FAILED "
            f"({sum(n for (_, _, r), n in mlflow.items() if r)} marked by the reaper), "
            f"{running} left RUNNING",
            f"wall time: {elapsed:.0f} s",
        ]
        print("\n".join(lines), flush=True)
        report = {**{k: v for k, v in figures.items() if k not in ("landed", "mlflow")},
                  "landed": dict(figures["landed"]),
                  "mlflow": {"/".join(k): v for k, v in mlflow.items()},
                  "clean_seconds": reference["seconds"], "outputs": outputs, "seconds": elapsed,
                  "summary": lines}
        (scratch / "fault_report.json").write_text(json.dumps(report, indent=1))
        print(f"report: {scratch / 'fault_report.json'}")
        ok = (not figures["corrupted"] and not figures["different"] and not running
              and figures["recovered"] == figures["kills"] and not figures["temporaries_left"])
        return 0 if ok else 1
    finally:
        if not args.keep and not args.scratch:
            for sub in ("clean", "chaos"):
                shutil.rmtree(scratch / sub, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
