"""Guarantee: a NaN or Inf in the loss or in the gradients is caught in the step it appears
(before the optimiser applies it); the run stops with a clear message and the last good
checkpoint stays, or, with ``train.nonfinite=skip``, that step is skipped and counted."""
from __future__ import annotations

import math

import pytest
import torch

from mim.engine.checkpoint import Checkpoints

pytestmark = pytest.mark.e2e

RUN = ["train.max_steps=6", "train.ckpt_every=1", "train.vis_every=100"]


@pytest.mark.parametrize("fault, says", [("loss.nan", "loss is nan at step 4"),
                                         ("loss.inf", "loss is inf at step 4"),
                                         ("grad.nan", "gradients are not finite at step 4")])
def test_nonfinite_stops_within_the_step(cli, tmp_path, fault, says, load_state):
    run = tmp_path / "run"
    result = cli.train(run, *RUN, check=False, env={"MIM_FAULTS": f"{fault}@4"})
    assert result.returncode == 1, cli.describe(result)
    assert says in result.stderr and "Traceback" not in result.stderr, cli.describe(result)
    assert "the step was not applied" in result.stderr
    latest = Checkpoints(run / "checkpoints").latest()
    assert latest is not None and latest.name == "step_00000003"  # the last good one
    assert latest.name in result.stderr
    state = load_state(latest)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert [r["step"] for r in cli.metrics(run)] == [1, 2, 3]


def test_nonfinite_skip_skips_the_step_and_counts_it(cli, tmp_path, load_state):
    run = tmp_path / "run"
    result = cli.train(run, *RUN, "train.nonfinite=skip", "train.keep_last=10",
                       env={"MIM_FAULTS": "grad.nan@4"})
    assert "gradients are not finite at step 4; step skipped" in result.stderr, \
        cli.describe(result)
    records = cli.metrics(run)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert [r["nonfinite_skipped"] for r in records] == [0, 0, 0, 1, 1, 1]
    assert records[3]["loss"] is None  # no finite step in that window: no loss to report
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(records) if i != 3)
    # the skipped step changed no weight
    before = load_state(run / "checkpoints" / "step_00000003")["model"]
    after = load_state(run / "checkpoints" / "step_00000004")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    final = load_state(run / "checkpoints" / "last")["model"]
    assert all(torch.isfinite(t).all() for t in final.values())


def test_nonfinite_skip_gives_up_after_too_many_in_a_row(cli, tmp_path):
    run = tmp_path / "run"
    result = cli.train(run, *RUN, "train.nonfinite=skip", "train.max_nonfinite_skips=2",
                       check=False, env={"MIM_FAULTS": "grad.nan@2+"})  # from step 2 on
    assert result.returncode == 1, cli.describe(result)
    assert "3 steps in a row (train.max_nonfinite_skips=2)" in result.stderr, cli.describe(result)
    assert "gradients are not finite at step 4" in result.stderr  # steps 2 and 3 skipped
    assert Checkpoints(run / "checkpoints").latest().name == "step_00000003"


def test_under_fp16_a_nonfinite_loss_still_stops_and_a_gradient_overflow_does_not(cli, tmp_path):
    """fp16: an Inf/NaN gradient is the loss scaler's to skip and count (tests/e2e/test_resume.py
    runs one through a resume), a non-finite loss still meets train.nonfinite=stop."""
    run = tmp_path / "run"
    result = cli.train(run, *RUN, "train.precision=fp16", check=False,
                       env={"MIM_FAULTS": "grad.nan@2,loss.nan@4"})
    assert result.returncode == 1, cli.describe(result)
    assert "loss is nan at step 4" in result.stderr, cli.describe(result)
    records = cli.metrics(run)
    assert [(r["step"], r["overflow_steps"], r["nonfinite_skipped"]) for r in records] == [
        (1, 0, 0), (2, 1, 0), (3, 1, 0)]
    assert records[1]["loss_scale"] == records[0]["loss_scale"] / 2
