"""Guarantees about checkpoints under faults:

- a kill at any point inside a checkpoint write leaves ``last`` complete and loadable, no
  partial directory is ever taken for a checkpoint, and the same command resumes and ends
  bit-identical to an uninterrupted run;
- a full disk or an unwritable run directory while checkpointing stops the run with a clear
  error, leaving the previous checkpoint intact (it never trains on without saving).
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from mim.engine.checkpoint import Checkpoints

from .conftest import wait_for

pytestmark = pytest.mark.e2e

RUN = ["train.max_steps=6", "train.ckpt_every=2", "train.vis_every=100"]
# the moments of a write, in order (mim/engine/checkpoint.py and backend.py): the temp dir
# exists; part of state.pt is on disk; all of it; renamed to step_N; `last` points at it
POINTS = ["ckpt.tmp_created", "ckpt.half_written", "ckpt.written", "ckpt.renamed", "ckpt.linked"]


@pytest.fixture(scope="module")
def straight(module_cli, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    module_cli.train(run, *RUN)
    return run


def _complete(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "client"} <= state.keys()
    return state


@pytest.mark.parametrize("point", POINTS)
def test_kill_inside_a_checkpoint_write(point, cli, tmp_path, straight, load_state):
    run = tmp_path / "run"
    # the second checkpoint (step 4) dies at `point`; step 2's is the previous one
    result = cli.train(run, *RUN, check=False, env={"MIM_FAULTS": f"{point}@2"})
    assert result.returncode == -signal.SIGKILL, cli.describe(result)
    checkpoints = Checkpoints(run / "checkpoints")
    latest = checkpoints.latest()
    assert latest is not None and latest.name in ("step_00000002", "step_00000004"), latest
    assert _complete(latest)["client"]["loop"]["step"] == int(latest.name[5:])
    for candidate in checkpoints.complete():  # every published name is a whole checkpoint
        _complete(candidate)
    if point in ("ckpt.tmp_created", "ckpt.half_written", "ckpt.written"):
        assert latest.name == "step_00000002"  # the unpublished write is not taken
        assert not (run / "checkpoints" / "step_00000004").exists()

    resumed = cli.train(run, *RUN)  # the same command, no fault
    assert "resumed from" in resumed.stderr, cli.describe(resumed)
    assert [r["step"] for r in cli.metrics(run)] == list(range(1, 7))
    want, got = load_state(straight / "checkpoints" / "last"), load_state(run / "checkpoints" / "last")
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # the next successful save cleans up the dead write


# -- full disk, unwritable directory -------------------------------------------------------
def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB filesystem of its own (tmpfs; needs root, as in CI here), or, without root,
    a plain folder with the process's file-size limit standing in for the full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = _can_mount() and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]).returncode == 0
    yield mount, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(mount)])


def _fill(mount: Path) -> None:
    """Write until the filesystem says ENOSPC."""
    with open(mount / "filler", "wb") as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass


def _fails_cleanly(cli, result, run: Path, want: str) -> None:
    assert result.returncode == 1, cli.describe(result)
    assert "Traceback" not in result.stderr, cli.describe(result)
    assert "could not write checkpoint" in result.stderr and want in result.stderr, \
        cli.describe(result)
    assert "step_00000002" in result.stderr  # names the intact previous checkpoint
    latest = Checkpoints(run / "checkpoints").latest()
    assert latest is not None and latest.name == "step_00000002"
    _complete(latest)
    assert not any(p.name.startswith(".tmp") for p in (run / "checkpoints").iterdir())


def test_disk_full_while_checkpointing(cli, tmp_path, small_disk, run_proc):
    mount, mounted = small_disk
    run = mount / "run"
    # checkpoints every 2 steps, nothing else written between them (logs every 1000 steps)
    args = cli.train_args(run, "train.max_steps=400", "train.ckpt_every=2",
                          "train.log_every=1000", "train.vis_every=1000")
    proc = run_proc(cli, args)
    wait_for(proc, lambda: (run / "checkpoints" / "step_00000002").is_dir(), "checkpoint 2")
    os.kill(proc.pid, signal.SIGSTOP)  # between two checkpoints
    if mounted:
        _fill(mount)  # the real thing: ENOSPC
    else:  # without root: a file-size limit on the running process stands in (EFBIG)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=240)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    _fails_cleanly(cli, result, run, "No space left on device" if mounted else "File too large")


def test_unwritable_run_directory_while_checkpointing(cli, tmp_path, small_disk, run_proc):
    mount, mounted = small_disk
    run = (mount if mounted else tmp_path) / "run"
    args = cli.train_args(run, "train.max_steps=400", "train.ckpt_every=2",
                          "train.log_every=1000", "train.vis_every=1000")
    proc = run_proc(cli, args)
    wait_for(proc, lambda: (run / "checkpoints" / "step_00000002").is_dir(), "checkpoint 2")
    os.kill(proc.pid, signal.SIGSTOP)
    folder = run / "checkpoints"
    if mounted:  # the folder bound onto itself read-only: unwritable for root too
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    else:
        folder.chmod(0o500)
    try:
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=240)
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)])
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    _fails_cleanly(cli, result, run, "Read-only file system" if mounted else "Permission denied")
