"""How a ``mim`` process ends (``mim.cli.command`` and ``finish``).

A finished rank of a process group skips interpreter teardown, so a third-party thread aborting
at exit cannot fail a finished run; the teardown crash is simulated by an ``atexit`` hook that
aborts the process, as the C++ runtime does for a joinable thread destroyed at exit. A reader
that leaves a pipe early gets no traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

SCRIPT = """
import atexit, os, sys
from mim.cli import finish
atexit.register(os.abort)  # a teardown that crashes
print("trained")  # buffered: stdout is a pipe
finish(int(sys.argv[1]))
"""


def end(code: int, world_size: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, WORLD_SIZE=str(world_size))
    return subprocess.run([sys.executable, "-c", SCRIPT, str(code)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_finished_rank_exits_zero_past_a_crashing_teardown() -> None:
    result = end(0, world_size=2)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "trained\n"  # flushed before the early exit


@pytest.mark.parametrize("code, world_size", [(0, 1), (1, 2)])
def test_a_single_process_or_a_failed_rank_exits_normally(code: int, world_size: int) -> None:
    """Outside a process group, and for a failure, the normal exit runs (here: its abort)."""
    result = end(code, world_size)
    assert result.returncode == -signal.SIGABRT
    assert result.stdout == "trained\n"


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """``mim plugins | head -1``: the pipe is closed before ``mim`` writes (it is still
    importing), so its first write fails with EPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "mim", "plugins"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err.decode(), err.decode()[-2000:]
    assert proc.returncode == 1
