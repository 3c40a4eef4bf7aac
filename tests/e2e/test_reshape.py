"""Resume on another shape: a run stopped on some processes goes on with another number of them.

The data position is stored in items, not steps (mim/engine/reshape.py), so the resumed run draws
the next items of the same global order. With the same global batch (2 x 4 or 1 x 8) the resumed
run therefore matches an uninterrupted one up to float32 rounding (the gradients are summed in
another order); with another global batch it goes on from the samples already seen.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .test_deepspeed import COMMON, ONE, RTOL, TWO, assert_same_curve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def straight(module_cli, tmp_path_factory) -> list[dict]:
    """The metrics of 8 uninterrupted steps on one process."""
    run = tmp_path_factory.mktemp("straight") / "run"
    module_cli.train(run, *COMMON, *ONE)
    return module_cli.metrics(run)


def test_ddp_resumed_on_one_process_continues_the_global_order(straight, module_cli,
                                                               tmp_path: Path) -> None:
    run = tmp_path / "run"
    module_cli.train(run, *COMMON, *TWO, "train.max_steps=4")
    result = module_cli.train(run, *COMMON, *ONE)
    log = (run / "train.log").read_text()
    assert ("written by backend=torch on 2 ranks, now backend=torch on 1 rank" in log), \
        module_cli.describe(result)
    # the same samples in the same order (a repeat or a gap would move the loss by 1e-2 or
    # more), the schedule and the AdamW moments carried over: the uninterrupted curve
    assert_same_curve(module_cli.metrics(run), straight, RTOL)


def test_one_process_resumed_on_two_goes_on_from_the_samples_seen(module_cli, load_state,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    module_cli.train(run, *COMMON, "train.batch_size=4", "train.max_steps=4")  # global batch 4
    result = module_cli.train(run, *COMMON, *TWO)  # global batch 8
    log = (run / "train.log").read_text()
    assert "written by backend=torch on 1 rank, now backend=torch on 2 ranks" in log, \
        module_cli.describe(result)
    rows = module_cli.metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["samples"] for r in rows] == [4, 8, 12, 16, 24, 32, 40, 48]
    assert all(math.isfinite(r["loss"]) for r in rows)
    loop = load_state(run / "checkpoints" / "last")["client"]["loop"]
    assert loop["drawn"] == {"micro_steps": 8, "items": [48]}  # items, all ranks
    assert load_state(run / "checkpoints" / "last")["client"]["shape"] == {
        "backend": "torch", "world_size": 2}


def test_a_resume_on_another_global_batch_reports_the_restored_learning_rate(
        module_cli, tmp_path: Path) -> None:
    """The learning rate derived from ``optim.blr`` follows the global batch, but a resume
    restores the schedule's peak with the optimiser's state: derived.json and the log give the
    one the run goes on with (the checkpoint's), not the new batch's."""
    run = tmp_path / "run"
    blr = ["optim.lr=null", "optim.blr=0.064", "optim.warmup_steps=1"]  # lr = 0.064 x 4 / 256
    module_cli.train(run, *blr, "train.batch_size=4", "train.max_steps=2")
    first = json.loads((run / "derived.json").read_text())["lr"]
    assert first == pytest.approx(1e-3)
    module_cli.train(run, *blr, *TWO, "train.max_steps=3")  # global batch 8: the config gives 2e-3
    assert json.loads((run / "derived.json").read_text())["lr"] == pytest.approx(first)
    assert "learning rate: 0.001, the checkpoint's (this config's batch gives 0.002" in \
        (run / "train.log").read_text()
    assert all(r["lr"] <= first * (1 + 1e-6) for r in module_cli.metrics(run))
