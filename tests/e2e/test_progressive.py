"""Progressive resolution end to end: a run killed before its size changes resumes bit-exactly
across the change (the size of an item is a function of its position in the data order)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.test_resume import assert_same_training_state

pytestmark = pytest.mark.e2e

# stages of 4 steps at 16, 24 and 32 pixels (2x2, 3x3 and 4x4 tokens of 8 px)
SCHEDULE = ["data.resolution_schedule=[16,24,32]", "train.max_steps=12", "train.ckpt_every=3",
            "train.vis_every=100"]


def test_a_run_killed_mid_schedule_resumes_bit_identical_across_the_size_change(
        cli, tmp_path: Path, load_state) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli.train(straight, *SCHEDULE, "train.num_workers=2")  # the sizes reach loader workers too
    stages = json.loads((straight / "derived.json").read_text())["resolution_schedule"]
    assert [(s["from_step"], s["input"], s["grid"]) for s in stages] == [
        (0, [16, 16], [2, 2]), (4, [24, 24], [3, 3]), (8, [32, 32], [4, 4])]

    result = cli.train(killed, *SCHEDULE, check=False, env={"MIM_FAULTS": "ckpt.linked@2"})
    assert result.returncode == -signal.SIGKILL, cli.describe(result)
    assert (killed / "checkpoints" / "last").resolve().name == "step_00000006"  # at 24 px
    result = cli.train(killed, *SCHEDULE)  # resumes at step 7: 24 px, then 32 px from step 9
    assert "resumed from" in result.stderr, cli.describe(result)
    assert [r["step"] for r in cli.metrics(killed)] == list(range(1, 13))
    assert_same_training_state(load_state(straight / "checkpoints" / "last"),
                               load_state(killed / "checkpoints" / "last"))


def test_the_schedule_changes_what_is_trained(cli, tmp_path: Path, load_state) -> None:
    """The same run at the fixed full size ends elsewhere: the small stages really ran."""
    fixed, scheduled = tmp_path / "fixed", tmp_path / "scheduled"
    cli.train(fixed, "train.max_steps=2")
    cli.train(scheduled, "train.max_steps=2", "data.resolution_schedule=[16,32]")
    a = load_state(fixed / "checkpoints" / "last")["model"]
    b = load_state(scheduled / "checkpoints" / "last")["model"]
    assert any(not (a[k] == b[k]).all() for k in a)
