"""A real one-node Slurm cluster for the end-to-end tests (``slurm_cluster`` fixture).

Installs the Debian packages (``slurmctld slurmd slurm-client munge``) with apt-get when
``slurmctld`` is missing, writes a ``slurm.conf`` in a temporary directory (state, spool, logs
there too), starts ``munged`` (as user munge), ``slurmctld -D -i`` and ``slurmd -D -N localhost``,
waits for ``sinfo`` to show the node idle, and stops the daemons by PID afterwards. Slurm reads
the configuration named by ``SLURM_CONF``, which the fixture sets for the test session. Where the
cluster cannot be set up (not root, no network for apt-get) the fixture fails with the reason:
these tests are not skipped.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def _run(*cmd: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        pytest.fail(f"slurm cluster: `{' '.join(cmd)}` exited {result.returncode}:\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}", pytrace=False)
    return result.stdout


def _install() -> None:
    if shutil.which("slurmctld") and shutil.which("munged") and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        pytest.fail("slurm cluster: slurmctld is not installed and installing it "
                    f"(apt-get install {' '.join(PACKAGES)}) needs root", pytrace=False)
    if not shutil.which("apt-get"):
        pytest.fail("slurm cluster: slurmctld is not installed and there is no apt-get",
                    pytrace=False)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run("apt-get", "update", "-qq", env=env)
    _run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(256, int(line.split()[1]) // 1024 * 3 // 4)
    return 1024


def _start_munge(root: Path) -> subprocess.Popen | None:
    """munged as user munge; None if one already answers (left running, not ours)."""
    if MUNGE_SOCKET.exists() and subprocess.run(
            ["sh", "-c", "munge -n | unmunge"], capture_output=True).returncode == 0:
        return None
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    for folder in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    proc = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground",
                             "--force"], stdout=open(root / "munged.log", "w"),
                            stderr=subprocess.STDOUT)
    _until(lambda: subprocess.run(["sh", "-c", "munge -n | unmunge"],
                                  capture_output=True).returncode == 0, 15, "munged answers",
           root / "munged.log")
    return proc


def _until(ok, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"slurm cluster: timed out after {timeout:.0f} s waiting until {what}\n{tail}",
                pytrace=False)


def _config(root: Path) -> Path:
    state, spool = root / "state", root / "spool"
    state.mkdir()
    spool.mkdir()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=mimtest",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "ReturnToService=2",
        "MpiDefault=none",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={state}",
        f"SlurmdSpoolDir={spool}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "KillWait=5",
        "MinJobAge=30",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} "
        f"RealMemory={_memory_mb()} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    return conf


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cancel_all() -> None:
    """Cancel the jobs still queued or running, so no job outlives the cluster."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    jobs = out.stdout.split() if out.returncode == 0 else []
    if not jobs:
        return
    subprocess.run(["scancel", *jobs], capture_output=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running one-node cluster (partition ``debug``); yields its ``slurm.conf``."""
    _install()
    root = tmp_path_factory.mktemp("slurm")
    conf = _config(root)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # sinfo/sbatch here and in every subprocess
    procs: list[subprocess.Popen | None] = []
    try:
        procs.append(_start_munge(root))
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)],
                                      stdout=open(root / "slurmctld.out", "w"),
                                      stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
                                      stdout=open(root / "slurmd.out", "w"),
                                      stderr=subprocess.STDOUT))

        def idle() -> bool:
            for proc in procs[1:]:
                if proc.poll() is not None:
                    logs = "".join(p.read_text()[-2000:] for p in root.glob("slurm*.log"))
                    pytest.fail(f"slurm cluster: a daemon exited ({proc.args}):\n{logs}",
                                pytrace=False)
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True,
                                 text=True)
            return out.returncode == 0 and out.stdout.strip() == "idle"

        _until(idle, 60, "sinfo shows the node idle", root / "slurmctld.log")
        yield conf
    finally:
        _cancel_all()
        for proc in reversed(procs):
            _stop(proc)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
