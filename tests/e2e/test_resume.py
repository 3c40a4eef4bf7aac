"""Kill, interrupt and resume: a resumed run ends bit-identical to an uninterrupted one.

The data design makes every random choice about a sample a pure function of
(seed, epoch, position), so neither a restart nor the number of loader workers may change a
single bit of the final weights or optimiser state.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.e2e

RESUME = ["train.max_steps=30", "train.ckpt_every=5", "train.num_workers=2"]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts / lists -> {"a.b.0": leaf}."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def assert_same_training_state(a: dict, b: dict) -> None:
    """Model and optimiser state bit-identical (every tensor with torch.equal)."""
    assert a["model"].keys() == b["model"].keys()
    assert a["model"], "empty model state"
    for name, tensor in a["model"].items():
        other = b["model"][name]
        assert tensor.dtype == other.dtype and tensor.shape == other.shape, name
        assert torch.equal(tensor, other), f"model tensor {name} differs"
    opt_a, opt_b = _flatten(a["optimizer"]), _flatten(b["optimizer"])
    assert opt_a.keys() == opt_b.keys()
    tensors = 0
    for key, value in opt_a.items():
        if isinstance(value, torch.Tensor):
            tensors += 1
            assert torch.equal(value, opt_b[key]), f"optimizer state {key} differs"
        else:
            assert value == opt_b[key], f"optimizer {key}: {value!r} != {opt_b[key]!r}"
    assert tensors >= 2 * len(a["model"]), "optimizer holds no Adam moments?"
    assert a["scheduler"] == b["scheduler"]
    assert a["client"]["loop"]["step"] == b["client"]["loop"]["step"]
    assert a["client"]["loop"]["samples"] == b["client"]["loop"]["samples"]


def test_kill_9_then_resume_is_bit_identical(cli, tmp_path: Path, load_state) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli.train(straight, *RESUME)

    proc = cli.popen(cli.train_args(killed, *RESUME))
    try:
        cli.wait_for(proc, lambda: (killed / "checkpoints" / "step_00000010").is_dir(),
                  "the step-10 checkpoint")
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as `kill -9 PID` would
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before the kill"
    finally:
        cli.reap(proc)
    done = sorted(p.name for p in (killed / "checkpoints").glob("step_*"))
    assert "step_00000030" not in done, done  # really killed mid-run

    result = cli.train(killed, *RESUME)  # the same command again
    log = (killed / "train.log").read_text()
    assert "resumed from" in log, cli.describe(result)

    steps = [r["step"] for r in cli.metrics(killed)]
    assert steps == list(range(1, 31)), steps  # each step once, none lost, none twice
    assert_same_training_state(load_state(straight / "checkpoints" / "last"),
                               load_state(killed / "checkpoints" / "last"))


def test_worker_count_does_not_change_the_result(cli, tmp_path: Path, load_state) -> None:
    runs = {}
    for workers in (0, 2):
        runs[workers] = tmp_path / f"workers{workers}"
        cli.train(runs[workers], "train.max_steps=5", f"train.num_workers={workers}")
    assert_same_training_state(load_state(runs[0] / "checkpoints" / "last"),
                               load_state(runs[2] / "checkpoints" / "last"))


def test_ctrl_c_exits_130_and_the_rerun_resumes(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train.max_steps=40", "train.ckpt_every=5"]
    proc = cli.popen(cli.train_args(run, *args))
    try:
        cli.wait_for(proc, lambda: (run / "checkpoints" / "step_00000005").is_dir(),
                  "the first checkpoint")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        cli.reap(proc)
    assert proc.returncode == 130, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    assert "run the same command to resume" in err, err[-4000:]
    assert not (run / "checkpoints" / "step_00000040").exists()

    result = cli.train(run, *args)
    assert "resumed from" in result.stderr, cli.describe(result)
    assert "resumed from" in (run / "train.log").read_text()
    steps = [r["step"] for r in cli.metrics(run)]
    assert steps == list(range(1, 41)), steps
    assert (run / "checkpoints" / "last").resolve().name == "step_00000040"


FP16 = ["train.precision=fp16", "train.max_steps=9", "train.ckpt_every=3", "train.vis_every=100"]


def test_fp16_resumes_bit_identical_with_its_loss_scale(cli, tmp_path: Path, load_state) -> None:
    """fp16 on the CPU: the gradient overflow at step 2 is skipped and halves the loss scale; a
    run killed right after its step-6 checkpoint resumes with that scale and its growth count
    and ends bit-identical to one never interrupted."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli.train(straight, *FP16, env={"MIM_FAULTS": "grad.nan@2"})
    result = cli.train(killed, *FP16, check=False,
                       env={"MIM_FAULTS": "grad.nan@2,ckpt.linked@2"})
    assert result.returncode == -signal.SIGKILL, cli.describe(result)
    assert (killed / "checkpoints" / "last").resolve().name == "step_00000006"
    result = cli.train(killed, *FP16)  # the same command again, no fault this time
    assert "resumed from" in result.stderr, cli.describe(result)

    records = cli.metrics(straight)
    assert [r["overflow_steps"] for r in records] == [0] + [1] * 8
    assert [r["loss_scale"] for r in records] == [2.0**16] + [2.0**15] * 8
    assert [r["nonfinite_skipped"] for r in records] == [0] * 9  # the scaler's, not a stop
    keys = ("step", "loss", "loss_scale", "overflow_steps")
    assert ([{k: r[k] for k in keys} for r in cli.metrics(killed)] ==
            [{k: r[k] for k in keys} for r in records])
    a = load_state(straight / "checkpoints" / "last")
    b = load_state(killed / "checkpoints" / "last")
    assert_same_training_state(a, b)
    assert a["scaler"] == b["scaler"] and a["scaler"]["overflow_steps"] == 1
