"""``mim train modality=omni``: one encoder on demo photos and demo clips (OmniMAE)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FAST = ["modality=omni", "experiment=omni_demo", "data.video.input_size=48",
        "data.image.input_size=48", "model.patch_size=8", "model.embed_dim=48", "model.depth=2",
        "model.num_heads=3", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "model.decoder_num_heads=2", "train.batch_size=8", "train.log_every=1",
        "train.num_workers=0", "optim.lr=1e-3", "optim.warmup_steps=2", "train.max_steps=20",
        "train.precision=fp32"]  # the loss bound below was measured in fp32; auto differs by CPU


def test_omni_trains_one_encoder_on_images_and_clips(cli, tmp_path: Path,
                                                     tmp_path_factory) -> None:
    run = tmp_path / "run"
    cache = {"MIM_CACHE_DIR": str(tmp_path_factory.mktemp("omni_cache"))}
    result = cli.run("train", *FAST, f"run.dir={run}", env=cache)
    assert result.returncode == 0, cli.describe(result)
    log = (run / "train.log").read_text()
    assert "data: video" in log and "data: image" in log
    assert "grid [1, 6, 6]" in log and "grid [4, 6, 6]" in log  # images as 2-frame clips
    derived = json.loads((run / "derived.json").read_text())
    assert set(derived["sources"]) == {"video", "image"}
    by_source = derived["steps_per_epoch_by_source"]
    assert set(by_source) == {"video", "image"} and all(v >= 1 for v in by_source.values())
    assert derived["steps_per_epoch"] > 1  # both sources' items, not the video ones only
    records = cli.metrics(run)
    assert [r["step"] for r in records] == list(range(1, 21))
    assert {r["source"] for r in records} == {"video", "image"}  # each step names its source
    assert all(r["source_steps"] == {r["source"]: 1} for r in records)  # log_every=1
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < 0.95 * first, [round(r["loss"], 4) for r in records]
    assert (run / "pictures" / "step_00000020.gif").is_file()
