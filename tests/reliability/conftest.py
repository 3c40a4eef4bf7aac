"""The e2e fixtures (``cli``, ``module_cli``, ``load_state``: the real CLI in subprocesses) plus
helpers to start, kill and reap runs. The e2e conftest is loaded by path, so this works under
any pytest import mode."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

_spec = importlib.util.spec_from_file_location(
    "mim_e2e_conftest", Path(__file__).resolve().parents[1] / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

cli = e2e.cli
module_cli = e2e.module_cli
load_state = e2e.load_state
FAST = e2e.FAST


def start(cli, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m mim ARGS`` in its own session (its loader workers can be reaped with it)."""
    return subprocess.Popen(e2e.mim_command(*args), cwd=cli.workdir, env=e2e._env(env),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str,
             timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"run ended (exit {proc.returncode}) before {what}:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            reap(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def reap(proc: subprocess.Popen) -> tuple[str, str]:
    """Kill what is left of the run's session (loader workers); return its output."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        return "", ""


@pytest.fixture
def run_proc():
    """Start runs through this; every one is reaped at the end of the test, whatever happens."""
    started: list[subprocess.Popen] = []

    def go(cli, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = start(cli, args, env)
        started.append(proc)
        return proc

    yield go
    for proc in started:
        reap(proc)
