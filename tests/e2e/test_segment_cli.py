"""``mim eval segment`` through the real command line: a set whose answer is known, the
three heads training, rasters with their bands, and the one-line refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)
# a 2-block ViT of width 48 on 8 px patches, at its random initialisation
TINY = ("model=mae_vit_tiny_patch16", "eval.init=random", "model.patch_size=8",
        "model.embed_dim=48", "model.depth=2", "model.num_heads=3", "eval.num_workers=0")
FAST = ("segment.batch_size=8", "segment.scale=[1,1]", "segment.warmup_epochs=1")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {"MIM_CACHE_DIR": str(tmp_path_factory.mktemp("mim_cache")), "OMP_NUM_THREADS": "1"}


def colour_cells(root: Path, counts=(24, 6), bands: int | None = None) -> Path:
    """Scenes of 8 px cells, each cell one class of one colour (patch-aligned: the answer is
    known); with ``bands``, uint16 rasters of that many bands instead of RGB pictures."""
    rng = np.random.default_rng(0)
    for split, count in zip(("training", "validation"), counts):
        images, labels = root / "images" / split, root / "annotations" / split
        images.mkdir(parents=True), labels.mkdir(parents=True)
        for i in range(count):
            label = rng.integers(0, 4, size=(5, 6)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
            noise = rng.integers(-20, 21, size=(*label.shape, 3))
            picture = np.clip(COLOURS[label].astype(int) + noise, 0, 255)
            if bands:
                import tifffile

                stack = np.concatenate([picture, picture[..., :1] // 2] * 2, -1)[..., :bands]
                tifffile.imwrite(images / f"p{i}.tif",
                                 (stack.transpose(2, 0, 1) * 100).astype(np.uint16),
                                 photometric="minisblack", planarconfig="separate")
            else:
                Image.fromarray(picture.astype(np.uint8)).save(images / f"p{i}.png")
            Image.fromarray(label, mode="L").save(labels / f"p{i}.png")
    return root


def segment(cli, *overrides: str, env=None) -> dict:
    result = cli.run("eval", "segment", *overrides, env=env)
    assert result.returncode == 0, cli.describe(result)
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("segment (") and " head): " in line, line
    return json.loads(Path(line.rsplit("results: ", 1)[1]).read_text())


def test_the_linear_head_finds_a_known_answer(module_cli, tmp_path, env) -> None:
    root = colour_cells(tmp_path / "cells")
    out = segment(module_cli, *TINY, *FAST, f"data.root={root}", "data.input_size=32",
                  "segment.epochs=10", "segment.lr=0.01", "segment.eval_every=5",
                  "segment.pictures=2", f"eval.out={tmp_path / 'eval'}", env=env)
    m = out["metrics"]
    assert m["head"] == "linear" and m["blocks"] == [1] and m["items"] == 6
    assert m["mIoU"] > 90, m
    assert set(m["per_class_iou"]) == {"class_0", "class_1", "class_2", "class_3"}
    assert [h["epoch"] for h in m["history"]] == [5, 10]
    assert len(m["pictures"]) == 2 and all(Path(p).is_file() for p in m["pictures"])
    assert out["segment"]["loss"] == "ce" and out["segment"]["weighting"] == "constant"
    # named by head, so another head's run beside it keeps its own file
    names = [p.name for p in (tmp_path / "eval").glob("*.json")]
    assert len(names) == 1 and names[0].startswith("segment-linear-random-cells-"), names
    # windows of 32 px over 40 x 48 scenes: not one window; the labels are scored whole
    assert out["num_val"] == 6 and Path(tmp_path / "eval").is_dir()


def test_upernet_trains_end_to_end_and_improves(module_cli, tmp_path, env) -> None:
    root = colour_cells(tmp_path / "cells", counts=(16, 4))
    deep = [o if o != "model.depth=2" else "model.depth=4" for o in TINY]
    out = segment(module_cli, *deep, *FAST, f"data.root={root}",
                  "data.input_size=32", "segment.head=upernet", "segment.channels=32",
                  "segment.epochs=6", "segment.eval_every=1", "segment.lr=2e-3",
                  f"eval.out={tmp_path / 'up.json'}", env=env)
    m = out["metrics"]
    assert m["head"] == "upernet" and m["blocks"] == [0, 1, 2, 3]
    history = [h["mIoU"] for h in m["history"]]
    assert history[-1] > history[0], history
    assert m["trained_params"] > 4 * 48 * 48 * 12  # the encoder is fine-tuned too


def test_unetr_on_the_volume_demo_improves(module_cli, tmp_path, env) -> None:
    out = segment(module_cli, "modality=volume", "model=mae3d_vit_tiny_patch16",
                  "eval.init=random", "model.patch_size=8", "model.tubelet_size=8",
                  "model.embed_dim=48", "model.depth=3", "model.num_heads=3",
                  "eval.num_workers=0", "data.input_size=[32,32,32]", "segment.epochs=4",
                  "segment.eval_every=1", "segment.batch_size=4", "segment.lr=2e-3",
                  "segment.warmup_epochs=0", "segment.feature_size=8", "segment.pictures=1",
                  f"eval.out={tmp_path / 'vol.json'}", env=env)
    m = out["metrics"]
    assert m["head"] == "unetr" and m["blocks"] == [0, 1, 2]  # patch 8 = 2^3: three blocks
    assert out["segment"]["loss"] == "dice_ce" and out["segment"]["weighting"] == "gaussian"
    assert set(m["per_class_dice"]) == {"background", "organ", "vessel", "lesion"}
    history = [h["mean_dice"] for h in m["history"]]
    assert history[-1] > history[0], history
    assert Path(m["pictures"][0]).is_file()


def test_rasters_segment_with_their_bands(module_cli, tmp_path, env) -> None:
    root = colour_cells(tmp_path / "tiles", counts=(12, 4), bands=5)
    out = segment(module_cli, *TINY, *FAST, f"data.root={root}", "data.input_size=32",
                  "data.mean=auto", "data.std=auto", "segment.epochs=2",
                  f"eval.out={tmp_path / 'r.json'}", env=env)
    assert out["data"]["reader"] == "raster" and len(out["data"]["mean"]) == 5
    assert out["model"]["name"] and out["metrics"]["items"] == 4


DATES = ("20210301", "20210501", "20210701")


def dated_cells(root: Path, counts=(16, 4), bands: int = 4) -> Path:
    """Time stacks of 3 dates in a folder per place, uint16 rasters of ``bands`` bands in 8 px
    cells: class 0 is dim on every date, class k (1-3) bright on date k alone, so every class
    but 0 has the same mean over the dates and one date alone cannot tell 1 from 2 or 3."""
    import tifffile

    rng = np.random.default_rng(1)
    for split, count in zip(("training", "validation"), counts):
        labels = root / "annotations" / split
        labels.mkdir(parents=True)
        for i in range(count):
            label = rng.integers(0, 4, size=(4, 5)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
            for step, date in enumerate(DATES):
                bright = (label == step + 1)[None] * 1000  # [1, H, W]
                values = 500 + bright + rng.integers(-50, 51, size=(bands, *label.shape))
                path = root / "images" / split / f"place_{i}" / f"S2_{date}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(path, values.astype(np.uint16), photometric="minisblack",
                                 planarconfig="separate")
            Image.fromarray(label, mode="L").save(labels / f"place_{i}.png")
    return root


def test_time_stacks_segment_with_their_dates(module_cli, tmp_path, env) -> None:
    """A label map for the dates of a place (Prithvi's multi-temporal crop segmentation):
    classes 1-3 differ only in which date is bright, so a head that saw one date (or their
    mean) would score at most about (100 + 3 x 33) / 4 = 50 % mIoU."""
    root = dated_cells(tmp_path / "stacks")
    cube = [o for o in TINY if o != "model.patch_size=8"] + [
        "model.patch_size=8", "model.tokenizer=cube", "model.tubelet_size=1"]
    out = segment(module_cli, *cube, *FAST, f"data.root={root}", "data.time_steps=3",
                  "data.input_size=32", "data.mean=auto", "data.std=auto", "segment.epochs=8",
                  "segment.lr=0.01", "segment.pictures=1", f"eval.out={tmp_path / 't.json'}",
                  env=env)
    m = out["metrics"]
    assert out["data"]["time_steps"] == 3 and m["items"] == 4
    assert m["mIoU"] > 70, m
    assert Path(m["pictures"][0]).is_file()


@pytest.mark.parametrize("overrides, message", [
    (("segment.head=upernet", "modality=volume", "model=mae3d_vit_tiny_patch16"),
     "segment.head: upernet is for 2D"),
    (("segment.head=deeplab",), "segment.head: 'deeplab' is not one of"),
    (("segment.overlap=1.5",), "segment.overlap"),
])
def test_bad_settings_stop_in_one_line(module_cli, tmp_path, env, overrides, message) -> None:
    result = module_cli.run("eval", "segment", "eval.init=random", *overrides, env=env)
    assert result.returncode == 2, module_cli.describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_empty_split_stops_in_one_line(module_cli, tmp_path, env) -> None:
    root = colour_cells(tmp_path / "cells", counts=(4, 0))
    for image in (root / "images" / "training").iterdir():
        image.unlink()
    result = module_cli.run("eval", "segment", *TINY, f"data.root={root}",
                            "data.input_size=32", env=env)
    assert result.returncode == 2, module_cli.describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.root" in lines[0], lines
