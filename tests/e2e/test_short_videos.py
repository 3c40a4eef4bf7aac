"""The videos people have: a folder of four clips of 48 frames, shorter than VideoMAE's 16 frames
every 4th (61 frames), and three broken files. By default the clips are padded by repeating
frames and counted (``padded`` in metrics.jsonl); with ``data.pad_short=false`` the run stops
with one line counting the items by reason and saying what to do, exit status 1, no traceback.
So do folders where nothing is readable (empty videos, all-NaN volumes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_video_data import encode

pytestmark = pytest.mark.e2e

# VideoMAE's sampling (16 x 4) on tiny frames and a tiny model: cheap, still the user's case
VIDEO = ["modality=video", "experiment=video_demo", "data.num_frames=16", "data.sampling_rate=4",
         "data.input_size=32", "model.patch_size=8", "model.embed_dim=48", "model.depth=2",
         "model.num_heads=3", "model.decoder_embed_dim=32", "model.decoder_depth=1",
         "model.decoder_num_heads=2", "train.batch_size=2", "train.log_every=1",
         "train.num_workers=0", "train.precision=fp32", "train.vis_every=100",
         "train.max_steps=3"]
SHORT = ("4 too short for a clip (61 frames: data.num_frames 16 every data.sampling_rate 4), "
         "2 not a video (cannot be opened), 1 empty; set data.pad_short=true to pad short "
         "videos by repeating frames, or lower data.num_frames or data.sampling_rate; remove or "
         "replace the unreadable files (train.log names each one and why)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("my_videos")
    for i in range(4):
        encode(root / f"clip_{i}.mp4", 48)
    whole = (root / "clip_0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])  # a copy that stopped
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_bytes(b"meeting notes, not a video\n" * 20)
    return root


def _one_line_stop(cli, result) -> str:
    """The run's one error line, after checking it stopped with status 1 and no traceback."""
    assert result.returncode == 1, cli.describe(result)
    assert "Traceback" not in result.stderr, cli.describe(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("mim: error: ")]
    assert len(lines) == 1, cli.describe(result)
    return lines[0][len("mim: error: "):]


def test_short_clips_are_padded_and_counted(cli, tmp_path, folder):
    run = tmp_path / "run"
    result = cli.run("train", *VIDEO, f"data.root={folder}", f"run.dir={run}")
    assert result.returncode == 0 and "Traceback" not in result.stderr, cli.describe(result)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["padded"] == 6  # every clip trained on was padded: 3 steps of 2
    assert records[-1]["skipped"] > 0 and all(r["loss"] > 0 for r in records)
    log = (run / "train.log").read_text()
    told = [line for line in log.splitlines() if "padded item" in line]
    assert 0 < len(told) <= 5 and "48 frames, shorter than a clip (61 frames" in told[0]
    assert "data.pad_short=false skips" in told[0]


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_without_padding_the_run_stops_with_one_line(cli, tmp_path, folder, decoder):
    run = tmp_path / "run"
    result = cli.run("train", *VIDEO, f"data.root={folder}", "data.pad_short=false",
                     f"data.decoder={decoder}", f"run.dir={run}")
    line = _one_line_stop(cli, result)
    assert line == "data: none of the 7 items could be read: " + SHORT, cli.describe(result)
    log = (run / "train.log").read_text()  # the files the line counts, each named
    assert all(f"skipped unreadable item {folder / name}" in log
               for name in ("clip_0.mp4", "truncated.mp4", "empty.mp4", "notes.mp4"))


def test_a_folder_of_empty_videos_stops_with_one_line(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(3):
        (empty / f"video_{i}.mp4").write_bytes(b"")
    result = cli.run("train", *VIDEO, f"data.root={empty}", f"run.dir={tmp_path / 'run'}")
    assert _one_line_stop(cli, result) == (
        "data: none of the 3 items could be read: 3 empty; remove or replace the unreadable "
        "files (train.log names each one and why)")


def test_a_folder_of_all_nan_volumes_stops_with_one_line(cli, tmp_path):
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    for i in range(3):
        np.save(volumes / f"scan_{i}.npy", np.full((20, 24, 28), np.nan, np.float32))
    result = cli.run("train", "modality=volume", "experiment=volume_demo",
                     "data.input_size=[16,16,16]", "model.patch_size=8", "model.tubelet_size=8",
                     "train.batch_size=2", "train.num_workers=0", "train.max_steps=2",
                     f"data.root={volumes}", f"run.dir={tmp_path / 'run'}")
    assert _one_line_stop(cli, result) == (
        "data: none of the 3 items could be read: 3 NaN or Inf voxels; remove or replace the "
        "unreadable files (train.log names each one and why)")
