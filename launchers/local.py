"""``launcher=local``: train on this machine, in this process or in ``launcher.nprocs`` processes.

With ``nprocs > 1`` the launcher does what ``torchrun --nproc_per_node N`` does: it starts N
copies of the same ``mim train`` command, each with the environment a torchrun worker gets
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``). A worker finds that environment, so it trains in its own process and
``train`` joins the process group. Re-running the command (rather than forking this process)
gives every rank a fresh interpreter, which CUDA and DeepSpeed's comm op both need. If a rank
fails, the others are stopped and the launcher exits with that rank's status. Under torchrun
(the environment already names a process group) ``nprocs`` is ignored.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mim.config.run_spec import RunSpec
from mim.config.errors import ConfigError
from mim.launching import Launcher
from mim.registry import LAUNCHERS
from mim.rundir import run_dir
from mim.train import train

GRACE_S = 30.0  # how long stopped ranks get to exit before they are killed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(code: int) -> int:
    """A child's return code as a shell exit status (killed by signal N -> 128 + N)."""
    return 128 - code if code < 0 else code


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    @dataclass
    class Config:
        nprocs: int = 1  # processes on this machine (one per GPU; CPU: cores are shared)

        def __post_init__(self) -> None:
            if self.nprocs < 1:
                raise ValueError(f"launcher.nprocs: must be >= 1, got {self.nprocs}")

    @classmethod
    def world_size(cls, config: LocalLauncher.Config) -> int:
        return config.nprocs

    def launch(self, spec: RunSpec) -> Path:
        nprocs = spec.launcher.config.nprocs
        if nprocs == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return train(spec)
        if spec.overrides is None:  # a spec built in Python, not by compose.load
            raise ConfigError("launcher.nprocs: more than 1 process needs the spec of "
                              "mim.config.compose.load(overrides), which each rank re-runs")
        return self._spawn(spec, nprocs)

    def _spawn(self, spec: RunSpec, nprocs: int) -> Path:
        base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs))
        # as torchrun does: split the cores instead of every rank using all of them
        base.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nprocs)))
        command = [sys.executable, "-m", "mim", "train", *spec.overrides]
        procs = [subprocess.Popen(command, env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
                                  preexec_fn=_die_with_parent) for r in range(nprocs)]
        # SIGTERM (a scheduler, `kill`) must stop the ranks too, not orphan them
        previous = signal.signal(signal.SIGTERM, _raise_exit)
        try:
            failed = _wait(procs)
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reached every rank already; `kill -INT` only this process
            _stop(procs, signal.SIGINT, after=2.0)
            raise
        finally:
            _stop(procs, signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous)
        if failed is not None:
            rank, code = failed
            print(f"mim: error: rank {rank} of {nprocs} exited with status {_status(code)}; "
                  "stopped the other ranks", file=sys.stderr)
            raise SystemExit(_status(code))
        return run_dir(spec)


def _die_with_parent() -> None:
    """In the child, before exec: a rank must not outlive a launcher killed with SIGKILL (Linux
    ``PR_SET_PDEATHSIG``; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _wait(procs: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait for every rank; the first to fail (rank, return code) ends the wait."""
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], sig: int, after: float = 0.0) -> None:
    """Send ``sig`` to the ranks still running ``after`` seconds from now, wait GRACE_S, then
    kill what is left."""
    deadline = time.monotonic() + after
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
