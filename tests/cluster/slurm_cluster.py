"""A real single-node SLURM on 127.0.0.1, for tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.

Debian's packages (``slurm-wlm``, ``slurmdbd``, ``munge``, ``mariadb-server``; ``.ci/run``
installs them) run as plain background processes of the caller: no systemd, no cgroups,
every file under one folder, every port picked free. :func:`start` returns once ``sinfo``
shows the node idle; :meth:`Cluster.stop` stops every daemon it started, by pid (it is also
registered with ``atexit``).

The node is this machine's memory (``slurmd -C``), two job slots per core (SLOTS_PER_CPU),
and four stand-in GPUs: a ``gpu`` GRES whose ``File=`` entries are device files that exist
everywhere (GPU_FILES), so that ``sbatch --gpus=1`` is scheduled by slurmctld as on a GPU
cluster (jobs get CUDA_VISIBLE_DEVICES; no CUDA device exists, so torch stays on the CPU).
Accounting is real: ``sacct``/``sacctmgr`` talk to slurmdbd, which stores jobs in MariaDB;
associations are enforced, so a job needs a real account.

By hand: ``python tests/cluster/slurm_cluster.py /tmp/slurm`` starts it and prints the
environment to use (``SLURM_CONF``); Ctrl-C stops it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCOUNT = "sparsealign"
PARTITION = "ci"
CLUSTER = "sparsealign-ci"
# Debian's daemons and the client commands the tests call.
PROGRAMS = ("munged", "mungekey", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld",
            "slurmd", "sinfo", "sbatch", "srun", "sacct", "sacctmgr", "squeue", "scancel")
PACKAGES = "slurm-wlm slurmdbd munge mariadb-server"
#: Job slots per core of this machine. A smoke-run SLURM job spends about half of its
#: 15 s in SLURM's and Snakemake's start-up (two jobs on two cores kept the load average
#: near 1), so the node declares twice this machine's CPUs (``config_overrides``).
SLOTS_PER_CPU = 2
#: Stand-in GPUs: device files that exist everywhere, one per slot of a 2-core machine.
GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


def missing_programs() -> list[str]:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [name for name in PROGRAMS if shutil.which(name, path=path) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_hardware() -> dict:
    """CPUs and RealMemory as slurmd detects them (``slurmd -C``)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return {"cpus": int(fields["CPUs"]), "mem_mb": int(fields["RealMemory"])}


@dataclass
class Cluster:
    root: Path
    env: dict = field(default_factory=dict)  # SLURM_CONF and PATH for the client commands
    cpus: int = 0
    mem_mb: int = 0
    procs: list = field(default_factory=list)  # (name, Popen), in start order

    def run(self, *command, check=True, timeout=60) -> str:
        proc = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def _daemon(self, name: str, command: list[str], log: Path) -> None:
        handle = open(log, "ab")
        proc = subprocess.Popen(command, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        self.procs.append((name, proc))

    def _wait(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for "
                                       f"{what}; see {self.root / 'log'}")
            try:
                if ready():
                    return
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.root / 'log'}")

    def stop(self) -> None:
        """Cancel every job, then SIGTERM every daemon this cluster started (by pid, newest
        first), SIGKILL after 20 s. Jobs first: their slurmstepd outlive slurmd."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):
            try:
                self.run("scancel", "--user", "root", "--full", check=False, timeout=20)
                deadline = time.monotonic() + 30
                while self.run("squeue", "-h", "-o", "%i", timeout=10).strip() \
                        and time.monotonic() < deadline:
                    time.sleep(0.5)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()


def start(root: Path) -> Cluster:
    """Start the cluster under ``root`` (created); on any failure, stop what was started."""
    root = Path(root)
    cluster = Cluster(root=root)
    atexit.register(cluster.stop)
    try:
        _start(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start(c: Cluster) -> None:
    etc, log, state = c.root / "etc", c.root / "log", c.root / "state"
    for folder in (etc, log, state / "ctld", state / "spool", state / "db", state / "run"):
        folder.mkdir(parents=True, exist_ok=True)
    munge_socket = state / "run" / "munge.socket"
    db_socket = state / "run" / "mysqld.sock"
    ports = {name: _free_port() for name in ("ctld", "slurmd", "dbd", "db")}
    hardware = _node_hardware()
    c.cpus, c.mem_mb = SLOTS_PER_CPU * hardware["cpus"], hardware["mem_mb"]
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    # snakemake-executor-plugin-slurm-jobstep (0.6.1) drops SLURM_CONF from the environment
    # of the srun it calls inside each job. A real cluster's slurm.conf is at /etc/slurm (or
    # comes from slurmctld, configless); this one's is private, so the srun on PATH sets
    # SLURM_CONF back and runs the real srun.
    srun = etc.parent / "bin" / "srun"
    srun.parent.mkdir(exist_ok=True)
    srun.write_text(f'#!/bin/sh\nexport SLURM_CONF={etc / "slurm.conf"}\n'
                    f'exec {shutil.which("srun", path=path)} "$@"\n')
    srun.chmod(0o755)
    c.env = {**os.environ, "SLURM_CONF": str(etc / "slurm.conf"), "PATH": f"{srun.parent}:{path}"}
    auth = f"AuthType=auth/munge\nAuthInfo=socket={munge_socket}\n"

    # munge: a key of our own, a socket of our own.
    key = etc / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--force"], check=True,
                   capture_output=True)
    key.chmod(0o400)
    c._daemon("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                         f"--socket={munge_socket}", f"--pid-file={state / 'run' / 'munged.pid'}",
                         f"--seed-file={state / 'munge.seed'}", f"--log-file={log / 'munged.log'}"],
              log / "munged.out")
    c._wait("munged", munge_socket.exists, 20)

    # MariaDB on loopback TCP, no grant tables (nothing but slurmdbd can reach it).
    datadir = state / "db"
    if not (datadir / "mysql").exists():
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
    c._daemon("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={datadir}", "--user=root",
                           f"--socket={db_socket}", f"--port={ports['db']}", "--bind-address=127.0.0.1",
                           "--skip-grant-tables", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                           f"--pid-file={state / 'run' / 'mariadbd.pid'}",
                           f"--log-error={log / 'mariadbd.log'}"], log / "mariadbd.out")
    c._wait("mariadbd", lambda: socket.create_connection(("127.0.0.1", ports["db"]), 1).close() or True)

    # slurmdbd: reads slurmdbd.conf beside $SLURM_CONF, which must be 0600 and the SlurmUser's.
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text(
        f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={ports['dbd']}\nSlurmUser=root\n"
        f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={ports['db']}\n"
        f"StorageUser=root\nStorageLoc=slurm_acct_db\nPidFile={state / 'run' / 'slurmdbd.pid'}\n"
        f"LogFile={log / 'slurmdbd.log'}\n")
    dbd_conf.chmod(0o600)

    # Stand-in GPUs, so that SAE trainings share the node as other jobs do.
    (etc / "gres.conf").write_text("".join(f"NodeName=localhost Name=gpu File={f}\n"
                                           for f in GPU_FILES))
    (etc / "slurm.conf").write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
{auth}StateSaveLocation={state / 'ctld'}
SlurmdSpoolDir={state / 'spool'}
SlurmctldPidFile={state / 'run' / 'slurmctld.pid'}
SlurmdPidFile={state / 'run' / 'slurmd.pid'}
SlurmctldLogFile={log / 'slurmctld.log'}
SlurmdLogFile={log / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['dbd']}
# Clients authenticate to slurmdbd through this munge socket, not through AuthInfo.
AccountingStoragePass={munge_socket}
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
ReturnToService=2
MailProg=/bin/true
MpiDefault=none
# sacct shows the plugin's --comment (rule and wildcards of each job).
AccountingStoreFlags=job_comment
# The node as declared here (CPUs: SLOTS_PER_CPU per core), not as slurmd detects it.
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={c.cpus} RealMemory={c.mem_mb} Gres=gpu:{len(GPU_FILES)} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")

    c._daemon("slurmdbd", ["slurmdbd", "-D"], log / "slurmdbd.out")
    c._wait("slurmdbd", lambda: c.run("sacctmgr", "-n", "list", "cluster", timeout=10) is not None)
    c.run("sacctmgr", "-i", "add", "cluster", CLUSTER, check=False)
    c.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}", check=False)
    c.run("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}",
          check=False)
    c._daemon("slurmctld", ["slurmctld", "-D", "-i"], log / "slurmctld.out")
    c._daemon("slurmd", ["slurmd", "-D", "-N", "localhost"], log / "slurmd.out")
    c._wait("the node idle in sinfo",
            lambda: c.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10).split() == ["localhost", "idle"],
            120)
    users = c.run("sacctmgr", "-n", "-P", "list", "assoc", f"account={ACCOUNT}", "format=user")
    if "root" not in users.split():
        raise RuntimeError(f"sacctmgr: no association of root with account {ACCOUNT}")


if __name__ == "__main__":
    import sys

    cluster = start(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/slurm-cluster"))
    print(f"export SLURM_CONF={cluster.env['SLURM_CONF']}  # account {ACCOUNT}, partition {PARTITION}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
