"""Guarantee: loading a checkpoint never runs code from it, and a checkpoint of another model is
named as such, with the mismatched keys listed, instead of a traceback or a silent partial load.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RUN = ["train.max_steps=2", "train.ckpt_every=2", "train.vis_every=100"]


class _Payload:
    """Unpickling this runs ``os.system(command)``: what a malicious checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_carrying_code_is_refused_not_run(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, *RUN)
    state = run / "checkpoints" / "last" / "state.pt"
    marker = tmp_path / "pwned"
    # a torch-zip checkpoint whose pickle calls os.system: torch.save pickles it as given
    import torch

    torch.save({"model": {}, "evil": _Payload(f"touch {marker}")}, state)
    result = cli.train(run, "train.max_steps=4", "train.ckpt_every=2", "train.vis_every=100",
                       check=False)
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.returncode == 1, cli.describe(result)
    assert "Traceback" not in result.stderr, cli.describe(result)
    assert f"refused to load {state.resolve()}" in result.stderr or "refused to load" in \
        result.stderr, cli.describe(result)
    assert "could run code" in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "weights_only" not in error, error  # what was refused, never the advice to force it

    # a plain pickle (not torch's format) is refused the same way
    with open(state, "wb") as f:
        pickle.dump(_Payload(f"touch {marker}"), f)
    result = cli.train(run, "train.max_steps=4", check=False)
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.returncode == 1 and "Traceback" not in result.stderr, cli.describe(result)
    assert "weights_only" not in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_checkpoint_of_another_model_lists_the_mismatched_keys(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, *RUN)
    other = tmp_path / "other"
    cli.train(other, *RUN, "model.depth=3", "model.embed_dim=96", "model.num_heads=3")
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(other / "checkpoints", run / "checkpoints", symlinks=True)
    result = cli.train(run, "train.max_steps=4", check=False)  # the depth-2, width-48 model
    assert result.returncode == 2, cli.describe(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("mim: ")]
    assert len(lines) == 1, cli.describe(result)
    line = lines[0]
    assert "was written for another model" in line, line
    assert "unexpected: blocks.2." in line, line  # the third block it does not have
    assert "shape mismatch: " in line and "(96,) vs (48,)" in line, line
    assert not (run / "checkpoints" / "step_00000004").exists()


def test_a_truncated_checkpoint_file_is_a_clear_error(cli, tmp_path: Path):
    """(Never produced by mim itself, see test_checkpoint_faults; e.g. a copy cut short.)"""
    run = tmp_path / "run"
    cli.train(run, *RUN)
    state = run / "checkpoints" / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    result = cli.train(run, "train.max_steps=4", check=False)
    assert result.returncode == 1, cli.describe(result)
    assert "cannot read checkpoint" in result.stderr and "Traceback" not in result.stderr, \
        cli.describe(result)
