"""`mim data pack` then `mim train data.format=wds`: the same training as on the folder, a resume
that continues bit for bit, and two ranks that together read the global batch."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_resume import assert_same_training_state

pytestmark = pytest.mark.e2e

STEPS = ["train.max_steps=4", "train.ckpt_every=2"]


@pytest.fixture(scope="module")
def data(module_cli, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the folder, its shards, a wds run of 4 steps with 2 loader workers)."""
    base = tmp_path_factory.mktemp("wds")
    rng = np.random.default_rng(0)
    (base / "src").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (36 + i, 44, 3), dtype=np.uint8)).save(
            base / "src" / f"{i:02d}.jpg", quality=90)
    result = module_cli.run("data", "pack", f"input={base / 'src'}", f"output={base / 'out'}",
                            "shard_size=6")
    assert result.returncode == 0, module_cli.describe(result)
    assert len(list((base / "out").glob("*.tar"))) == 3
    module_cli.train(base / "wds", "data.format=wds", f"data.root={base / 'out'}",
                     "train.num_workers=2", *STEPS)
    return base / "src", base / "out", base / "wds"


def losses(cli, run: Path) -> list[float]:
    return [row["loss"] for row in cli.metrics(run) if "loss" in row]


def test_a_run_on_shards_is_the_run_on_the_folder(module_cli, data, tmp_path):
    src, _, wds = data
    module_cli.train(tmp_path / "folder", f"data.root={src}", *STEPS)
    assert len(losses(module_cli, wds)) == 4
    assert losses(module_cli, wds) == losses(module_cli, tmp_path / "folder")


def test_a_resumed_run_on_shards_ends_bit_identical(module_cli, data, tmp_path, load_state):
    _, out, wds = data
    resumed = tmp_path / "resumed"
    shutil.copytree(wds, resumed, symlinks=True)
    checkpoints = resumed / "checkpoints"
    shutil.rmtree(checkpoints / "step_00000004")
    (checkpoints / "last").unlink()
    os.symlink("step_00000002", checkpoints / "last")
    result = module_cli.train(resumed, "data.format=wds", f"data.root={out}",
                              "train.num_workers=2", *STEPS)
    assert "resumed from" in result.stderr, module_cli.describe(result)
    assert_same_training_state(load_state(wds / "checkpoints" / "last"),
                               load_state(checkpoints / "last"))


def test_two_ranks_read_the_global_batch_between_them(module_cli, data, tmp_path):
    _, out, wds = data
    module_cli.train(tmp_path / "two", "data.format=wds", f"data.root={out}",
                     "launcher.nprocs=2", "train.batch_size=4", *STEPS)
    # each rank 4 of the 8 items: the mean over ranks is the one-process batch's loss, which
    # a rank reading an item twice (or one another rank read) could not give
    assert losses(module_cli, tmp_path / "two") == pytest.approx(losses(module_cli, wds),
                                                                 rel=1e-4)


def test_a_resume_on_shards_added_since_is_refused(module_cli, data, tmp_path):
    _, out, wds = data
    grown = tmp_path / "grown"
    shutil.copytree(out, grown)
    shutil.copy(grown / "shard-000002.tar", grown / "shard-000003.tar")
    resumed = tmp_path / "resumed"
    shutil.copytree(wds, resumed, symlinks=True)
    result = module_cli.train(resumed, "data.format=wds", f"data.root={grown}",
                              "train.num_workers=2", "train.max_steps=6", "train.ckpt_every=2",
                              check=False)
    assert result.returncode == 2, module_cli.describe(result)
    assert "data identity.image.shards" in result.stderr  # the shard list differs
    assert "1 not in it (shard-000003.tar)" in result.stderr  # the manifest's warning


def test_a_run_on_an_interrupted_pack_stops_before_any_compute(module_cli, data, tmp_path):
    _, out, _ = data
    stopped = tmp_path / "stopped"
    shutil.copytree(out, stopped)
    (stopped / "manifest.json").unlink()  # a pack killed before its end writes none
    result = module_cli.train(tmp_path / "run", "data.format=wds", f"data.root={stopped}",
                              check=False)
    assert result.returncode == 2, module_cli.describe(result)
    assert f"data.root: {stopped} holds an interrupted mim data pack" in result.stderr
    assert not (tmp_path / "run").exists()
