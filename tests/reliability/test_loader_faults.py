"""Guarantee: a loader worker that dies or hangs, or a step that stalls, is reported and the run
stops cleanly within ``train.timeout``; it never hangs forever, and the last checkpoint stays
so the same command resumes."""
from __future__ import annotations

import time

import pytest

from mim.engine.checkpoint import Checkpoints

pytestmark = pytest.mark.e2e

# the item loads counted per worker: with 2 workers and 8 items per batch, load 30 is in a batch
# after the first checkpoint (step 1: 8 items over 2 workers)
RUN = ["train.max_steps=40", "train.ckpt_every=1", "train.vis_every=100", "train.num_workers=2"]


def test_killed_loader_worker_stops_the_run_cleanly(cli, tmp_path):
    run = tmp_path / "run"
    result = cli.train(run, *RUN, check=False, env={"MIM_FAULTS": "load.die@30"}, timeout=200)
    assert result.returncode == 1, cli.describe(result)
    assert "Traceback" not in result.stderr, cli.describe(result)
    assert "data loading failed before step" in result.stderr, cli.describe(result)
    # torch's words for the dead worker, or (when the worker dies handing a batch over) ours
    assert any(words in result.stderr for words in (
        "exited unexpectedly", "killed by signal", "a worker exited while handing over a batch"))
    latest = Checkpoints(run / "checkpoints").latest()
    assert latest is not None and latest.name in result.stderr
    resumed = cli.train(run, *RUN)  # no fault: the same command finishes the run
    assert "resumed from" in resumed.stderr
    assert [r["step"] for r in cli.metrics(run)] == list(range(1, 41))


def test_hung_loader_worker_times_out(cli, tmp_path):
    run = tmp_path / "run"
    began = time.monotonic()
    result = cli.train(run, *RUN, "train.timeout=8", check=False,
                       env={"MIM_FAULTS": "load.hang@30"}, timeout=200)
    took = time.monotonic() - began
    assert result.returncode != 0, cli.describe(result)
    assert "Traceback" not in result.stderr or "mim-watchdog" in result.stderr
    assert ("DataLoader timed out after 8" in result.stderr
            or "no progress for" in result.stderr), cli.describe(result)
    assert took < 150, took  # stopped by the limit, not by the test's own timeout
    assert Checkpoints(run / "checkpoints").latest() is not None


def test_stalled_step_in_the_main_process_is_stopped_by_the_watchdog(cli, tmp_path):
    """No workers: the hang is in the training process itself; only the watchdog can help."""
    run = tmp_path / "run"
    result = cli.train(run, "train.max_steps=40", "train.ckpt_every=1", "train.vis_every=100",
                       "train.num_workers=0", "train.timeout=6", check=False,
                       env={"MIM_FAULTS": "load.hang@30"}, timeout=200)
    assert result.returncode == 3, cli.describe(result)  # EXIT_STALLED
    assert "no progress for" in result.stderr and "train.timeout=6" in result.stderr, \
        cli.describe(result)
    assert "mim/faults.py" in result.stderr  # every thread's stack shows where it hangs
    assert "run the same command to resume" in result.stderr
    latest = Checkpoints(run / "checkpoints").latest()
    assert latest is not None and latest.name == "step_00000003"  # 8 items/step: item 30 -> 4
