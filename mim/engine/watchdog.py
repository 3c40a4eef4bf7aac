"""A step watchdog: a run that makes no progress for ``train.timeout`` seconds (a hung loader
worker, a stuck filesystem, a collective waiting for a dead rank) is stopped with a message and
every thread's stack, instead of hanging until someone notices.

The loop calls ``beat()`` after every micro-step. A daemon thread checks the time since the last
beat; past the limit it logs the error, dumps all Python stacks to stderr (``faulthandler``),
and ends the process with exit status ``EXIT_STALLED``: a hung call cannot be interrupted from
another thread, so leaving the process is the only safe way out. The last checkpoint is never
touched by this (checkpoints are published atomically), so the same command resumes.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("mim")
EXIT_STALLED = 3


class Watchdog:
    def __init__(self, timeout: float | None, describe: Callable[[], str]):
        self.timeout, self.describe = timeout, describe
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Watchdog":
        if self.timeout is not None:
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._watch, name="mim-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def beat(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        assert self.timeout is not None
        period = min(5.0, self.timeout / 4)
        while not self._stop.wait(period):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                log.error("no progress for %.0f s (train.timeout=%s) %s; stopping. Stacks of "
                          "every thread follow on stderr. The last checkpoint is intact: run "
                          "the same command to resume.", idle, self.timeout, self.describe())
                for handler in log.handlers:
                    handler.flush()
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(EXIT_STALLED)
