"""Shared helpers of the end-to-end tests: run the real ``mim`` CLI in a subprocess.

Every run uses a tiny model (32 px input, 8 px patches: a 4x4 token grid, 2 encoder blocks of
width 48) so that a training run costs seconds on two CPU cores. The fixtures are the only
interface (no helper module to import), so the tests work under any pytest import mode.

A command run to its end (``cli.run``, ``cli.train``) is forked from a warm interpreter that
has imported torch and mim once (``warm.py``: most of a tiny run's time was start-up); runs a
test signals or kills (``cli.popen``) and other interpreters start fresh. ``MIM_TEST_WARM=0``
starts every command fresh.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds for one CLI call; a normal one takes 5-25 s here

# small and fast, still a real MAE: the 75 % random mask leaves 4 of 16 tokens visible.
# fp32, not the default train.precision=auto: these runs are compared with each other exactly
# (resume, DDP, ZeRO, XLA), and auto picks bf16 on some CPUs and fp32 on others
FAST = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=48",
        "model.depth=2", "model.num_heads=3", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=8",
        "train.num_workers=0", "train.log_every=1", "optim.lr=1e-3", "optim.warmup_steps=2",
        "train.precision=fp32"]


def with_overrides(base: list[str], *overrides: str) -> list[str]:
    """``base`` (e.g. FAST) then ``overrides``, a later value of a key taking the place of an
    earlier one: mim refuses a key given twice, so a test's setting replaces FAST's (or a
    shared list's) instead of following it."""
    def key(item: str) -> str:
        return item.split("=", 1)[0].lstrip("+~")

    items = [*base, *overrides]
    return [o for n, o in enumerate(items) if key(o) not in {key(x) for x in items[n + 1:]}]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed mim, not whatever a caller put first
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def mim_command(*args: str, python: str | Path = sys.executable) -> list[str]:
    return [str(python), "-m", "mim", *args]


class _Warm:
    """The client of ``warm.py``: one warm interpreter per test process, started on first use
    (``MIM_TEST_WARM=0`` turns it off: every command in a fresh interpreter)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        to_server, self.send = os.pipe()
        self.recv, from_server = os.pipe()
        self.folder = Path(tempfile.mkdtemp(prefix="mim-warm-"))
        with open(self.folder / "server.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("warm.py")), str(to_server),
                 str(from_server)], pass_fds=(to_server, from_server), env=_env(),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        os.close(to_server)
        os.close(from_server)
        self.pending = b""

    def _reply(self, timeout: float | None) -> int | None:
        """The next line from the server as a number, or None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.recv], [], [], left)[0]:
                return None
            chunk = os.read(self.recv, 4096)
            if not chunk:
                log = (self.folder / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the warm interpreter ended; its log:\n{log}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return int(line)

    def run(self, args: list[str], cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        out, err = self.folder / "out", self.folder / "err"
        request = json.dumps({"args": args, "cwd": str(cwd), "env": env, "out": str(out),
                              "err": str(err)}) + "\n"
        os.write(self.send, request.encode())
        pid = self._reply(None)
        status = self._reply(timeout)
        if status is None:
            os.killpg(pid, signal.SIGKILL)  # the child's session: it and its loader workers
            self._reply(None)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        command = mim_command(*args)
        if status is None:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, status, stdout, stderr)


_warm = _Warm()


def run_mim(*args: str, cwd: Path, python: str | Path = sys.executable,
            timeout: float = TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mim ARGS`` from ``cwd`` (never the checkout, so nothing lands in the repo);
    through the warm interpreter when it is this Python (``warm.py``)."""
    if str(python) == sys.executable and os.environ.get("MIM_TEST_WARM", "1") != "0":
        return _warm.run(list(args), cwd, _env(env), timeout)
    return subprocess.run(mim_command(*args, python=python), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=_env(env))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: exit code and the tail of both streams."""
    return (f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}"
            f"\n--- stderr ---\n{result.stderr[-5000:]}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str,
             timeout: float = 180.0) -> None:
    """Poll ``ready()`` while the started run lives; fail with its stderr if it ends first."""
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
    """Kill what is left of a started run's session (loader workers); return its output."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        return "", ""


class Cli:
    """The fixture object: ``cli.train(run_dir, *overrides)`` and friends."""

    fast = FAST
    repo = REPO
    with_overrides = staticmethod(with_overrides)
    timeout = TIMEOUT

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def run(self, *args: str, python: str | Path = sys.executable, timeout: float = TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_mim(*args, cwd=self.workdir, python=python, timeout=timeout, env=env)

    def train_args(self, run_dir: Path, *overrides: str) -> list[str]:
        return ["train", *with_overrides(["modality=image", *FAST], *overrides,
                                         f"run.dir={run_dir}")]

    def train(self, run_dir: Path, *overrides: str, check: bool = True,
              python: str | Path = sys.executable, env: dict[str, str] | None = None,
              timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        result = self.run(*self.train_args(run_dir, *overrides), python=python, env=env,
                          timeout=timeout)
        if check:
            assert result.returncode == 0, describe(result)
        return result

    def popen(self, args: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``python -m mim ARGS`` in its own session (so its workers can be reaped), with
        SIGINT at its default as in a terminal: a shell running the tests as a background job
        hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt."""
        return subprocess.Popen(mim_command(*args), cwd=self.workdir, env=_env(env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=_default_sigint)

    metrics = staticmethod(read_metrics)
    describe = staticmethod(describe)
    wait_for = staticmethod(wait_for)
    reap = staticmethod(reap)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "cwd"
    work.mkdir()
    return Cli(work)


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """``cli`` shared by the tests of one module: a run several tests compare against runs once."""
    work = tmp_path_factory.mktemp("cwd")
    return Cli(work)


@pytest.fixture
def load_state() -> Callable[[Path], dict]:
    """``state.pt`` of a checkpoint directory, loaded as mim loads it (weights_only=True)."""
    import torch

    def load(checkpoint: Path) -> dict:
        return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)

    return load
