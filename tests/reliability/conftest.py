"""The e2e fixtures (``cli``, ``module_cli``, ``load_state``: the real CLI in subprocesses) plus
helpers to start, kill and reap runs. The e2e conftest is loaded by path, so this works under
any pytest import mode."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "mim_e2e_conftest", Path(__file__).resolve().parents[1] / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

cli = e2e.cli
module_cli = e2e.module_cli
load_state = e2e.load_state
FAST = e2e.FAST
with_overrides = e2e.with_overrides


def start(cli, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m mim ARGS`` in its own session (its loader workers can be reaped with it)."""
    return cli.popen(args, env)


wait_for = e2e.wait_for
reap = e2e.reap


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
