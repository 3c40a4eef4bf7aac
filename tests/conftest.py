"""Settings every test shares, whichever machine it lands on, and work started ahead.

``train.precision=auto`` picks bf16 where the CPU computes it natively (AVX512-BF16 on a Zen 4)
and fp32 elsewhere (a Zen 3). The suite pins that answer to "not native" through
``MIM_NATIVE_BF16`` (``mim/engine/precision.py``), inherited by every process a test starts, so
no outcome depends on the CPU; the tests of the bf16-default path set it to 1 themselves. Set
it before running pytest to run the whole suite on the other path.

The XLA tests need a second virtual environment (``tests/xla_env.sh``: torch_xla pins its own
torch; a 4 GB download on a new machine). When a session will run them and that environment
is not built yet, the build starts in the background as the session starts, so the download
overlaps the other tests; the XLA fixture calls the same script, which waits for that build.

The suite runs on pytest-xdist, one worker per core, a test file at a time per worker
(``pyproject.toml``). A worker's torch, and every process a test starts, gets an equal share of
the cores, and the files that take longest start first, so no long one is left to run alone
at the end; while the XLA environment is being built, the XLA file runs last, giving the
background build the whole session.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("MIM_NATIVE_BF16", "0")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # before anything imports torch
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

TESTS = Path(__file__).resolve().parent
XLA_TESTS = TESTS / "e2e" / "test_xla.py"
_builder: subprocess.Popen | None = None
# the longest files first, longest to shortest (seconds on 2 busy Zen 4 cores, measured with
# --durations=0 on a fresh clone), so the two workers end together on short files; every other
# file keeps its place. The XLA file joins them where its environment is built already, and
# goes last where the session builds it in the background.
FIRST = ("e2e/test_deepspeed.py",  # 197
         "e2e/test_eval_cli.py",  # 134
         "e2e/test_xla.py",  # 87
         "e2e/test_bench_smoke.py",  # 62
         "e2e/test_deepspeed_read.py",  # 57
         "e2e/test_compiling.py",  # 52
         "reliability/test_kill_9.py",  # 48
         "e2e/test_slurm.py",  # 45
         "e2e/test_gpu_check.py",  # 44
         "e2e/test_train_options.py",  # 37
         "reliability/test_loader_faults.py")  # 30


def xla_venv() -> Path:
    return Path(os.environ.get("MIM_XLA_VENV", Path.home() / ".cache" / "mim" / "xla-venv"))


def _selects(config: pytest.Config, path: Path) -> bool:
    """Whether the paths on the command line (or ``testpaths``) include ``path``."""
    for arg in config.args or [str(TESTS)]:
        given = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == given or given in path.parents:
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    global _builder
    config = session.config
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its controller started it
        return
    if (xla_venv() / ".mim-xla-ready").is_file() or not _selects(config, XLA_TESTS):
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    xla_venv().parent.mkdir(parents=True, exist_ok=True)
    with open(xla_venv().parent / "xla-venv-build.log", "w") as log:  # the fixture shows it
        _builder = subprocess.Popen(["bash", str(TESTS / "xla_env.sh")],
                                    stdout=subprocess.DEVNULL, stderr=log, env=env,
                                    start_new_session=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # the XLA fixture has waited for the build if its tests ran; a session that stopped early
    # ends the build (a venv without its marker file is built again next time)
    if _builder is not None and _builder.poll() is None:
        os.killpg(_builder.pid, signal.SIGTERM)  # bash and the pip it runs
        _builder.wait()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xla_ready = (xla_venv() / ".mim-xla-ready").is_file()

    def place(item: pytest.Item) -> tuple[int, int]:
        if item.path == XLA_TESTS and not xla_ready:
            return (2, 0)
        path = item.path.relative_to(TESTS).as_posix()
        return (0, FIRST.index(path)) if path in FIRST else (1, 0)

    items.sort(key=place)  # stable: the tests of a file stay in their order
