"""A warm interpreter for the end-to-end tests: ``python -m mim ARGS`` without the start-up.

A tiny ``mim train`` spends 3 to 4 of its 4.5 seconds importing torch, ``torch._dynamo`` (every
torch optimiser imports it), Hydra and mim; the suite starts a few hundred of them. This
server imports those once, then forks one child per command the tests run. The child is a
process of its own exactly as ``python -m mim`` would make it: its own session, working
directory, environment, argv and standard streams (files the caller reads), ``OMP_NUM_THREADS``
applied, ``mim/__main__.py`` run as ``__main__``, the normal interpreter exit (threads joined,
``atexit`` run, streams flushed) and its exit status. Only what happens at import differs,
and nothing in mim reads the environment at import (``tests/e2e/conftest.py`` uses a fresh
interpreter for any other Python and for the runs a test signals or kills).

Protocol, one request at a time on the pipes given as ``argv[1:3]``: a JSON line
``{"args", "env", "cwd", "out", "err"}`` in; ``"<pid>"`` out when the child starts, then
``"<exit status>"`` when it ends (negative: killed by that signal).
"""
from __future__ import annotations

import json
import os
import sys
import threading

# what every mim command imports, and what a training run imports on its first optimiser
import torch
import torch._dynamo  # noqa: F401
import mim.cli  # noqa: F401
import mim.train  # noqa: F401


def _streams(out: str, err: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout.reconfigure(line_buffering=True, write_through=True)
    sys.stderr.reconfigure(line_buffering=True, write_through=True)


def _exit_status(code: object) -> int:
    """What the interpreter makes of ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request: dict, pipes: tuple[int, int]) -> None:
    for fd in pipes:
        os.close(fd)
    os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _streams(request["out"], request["err"])
    threads = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads else len(os.sched_getaffinity(0)))
    sys.argv = [str(mim.__path__[0]) + "/__main__.py", *request["args"]]
    sys.path[0] = request["cwd"]
    status = 0
    try:
        import runpy

        runpy.run_module("mim", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:  # as the interpreter reports an uncaught exception
        import traceback

        traceback.print_exc()
        status = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  (the interpreter's own exit steps)
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def serve(read_fd: int, write_fd: int) -> None:
    requests = os.fdopen(read_fd, "r")
    replies = os.fdopen(write_fd, "w", buffering=1)
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, (read_fd, write_fd))
        replies.write(f"{pid}\n")
        _, status = os.waitpid(pid, 0)
        replies.write(f"{os.waitstatus_to_exitcode(status)}\n")


if __name__ == "__main__":
    assert threading.active_count() == 1, "a thread started at import would not survive fork"
    serve(int(sys.argv[1]), int(sys.argv[2]))
