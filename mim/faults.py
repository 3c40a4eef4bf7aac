"""Fault injection for the reliability tests (``tests/reliability/``): named points in the code
where a test can make the process die, hang or see bad numbers, to prove what survives.

Off unless the environment variable ``MIM_FAULTS`` is set (a comma-separated list of
``point``, ``point@N`` or ``point@N+``: fire on the N-th time the point is reached, counting
from 1 (without ``@N`` on the first), or with ``+`` on the N-th and every time after). Reaching a point costs one dictionary lookup when faults are off.

Points and what they do when they fire:

- ``ckpt.*`` (``ckpt.tmp_created``, ``ckpt.half_written``, ``ckpt.written``,
  ``ckpt.renamed``, ``ckpt.linked``): SIGKILL this process at that moment of a checkpoint
  write (``kill`` below), like a node dying mid-save.
- ``loss.nan`` / ``loss.inf``: the loop's loss of that micro-step becomes NaN / Inf.
- ``grad.nan``: one gradient becomes NaN after the backward pass of that micro-step.
- ``load.hang``: the data loader hangs forever on that item (a stuck network filesystem).
- ``load.die``: the worker process loading that item is SIGKILLed (the OOM killer).
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

ENV = "MIM_FAULTS"
_counts: Counter = Counter()


def _armed() -> dict[str, tuple[int, bool]]:
    spec = os.environ.get(ENV, "")
    armed = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, nth = item.partition("@")
        armed[point] = (int(nth.rstrip("+")) if nth else 1, nth.endswith("+"))
    return armed


def fires(point: str) -> bool:
    """True the N-th time ``point`` is reached in this process (and every time after with
    ``@N+``), N from ``MIM_FAULTS``."""
    if ENV not in os.environ:
        return False
    armed = _armed().get(point)
    if armed is None:
        return False
    nth, onwards = armed
    _counts[point] += 1
    return _counts[point] == nth or (onwards and _counts[point] > nth)


def kill(point: str) -> None:
    """SIGKILL this process if ``point`` fires (nothing runs after: no cleanup, no flush)."""
    if fires(point):
        os.kill(os.getpid(), signal.SIGKILL)


def hang(point: str) -> None:
    """Block forever if ``point`` fires."""
    if fires(point):
        while True:
            time.sleep(3600)


class _KilledMidWrite:
    """A file that passes the ``ckpt.half_written`` fault point once, when its first 64 KiB
    are on disk (tests only: a checkpoint file cut short)."""

    def __init__(self, file: Any):
        self.file, self.written, self.passed = file, 0, False

    def write(self, data: bytes) -> int:
        written = self.file.write(data)
        self.written += written
        if not self.passed and self.written >= 1 << 16:
            self.passed = True
            self.file.flush()
            kill("ckpt.half_written")
        return written

    def flush(self) -> None:
        self.file.flush()


def cut_short(file: Any) -> Any:
    """``file``, or, with faults on, a writer that passes ``ckpt.half_written`` mid-file."""
    return _KilledMidWrite(file) if ENV in os.environ else file
