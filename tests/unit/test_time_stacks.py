"""Time stacks (data.time_steps): a folder per sample, a raster per date -> [C, T, H, W] in date
order; a stack of another date count, a missing or repeated date or other sizes is skipped."""
from __future__ import annotations

from pathlib import Path

import mim  # noqa: F401
import numpy as np
import pytest
import tifffile
import torch

from mim.models.factory import create_model
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset, resolve_data
from mim.modalities.image.stacks import parse_date

BANDS, DATES = 6, ("2020-03-01", "2020123", "20200901")  # out of order on purpose


def write(path: Path, value: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((BANDS, size, size), value, np.uint16),
                     photometric="minisblack", planarconfig="separate")


def stacks(root: Path) -> None:
    for place in range(3):
        for step, date in enumerate(DATES):
            write(root / f"place_{place}" / f"HLS_{date}.tif", 100 * (place + 1) + step)


def config(root: Path, **keys) -> ImageDataConfig:
    return resolve_data(ImageDataConfig(root=str(root), input_size=16, time_steps=3,
                                        mean=[0.0] * BANDS, std=[1.0] * BANDS, **keys))


def test_a_stack_is_bands_by_dates_in_date_order(tmp_path):
    stacks(tmp_path / "data")
    ds = build_dataset(config(tmp_path / "data"))
    assert len(ds) == 3
    x = ds[(0, 5)].x
    assert x.shape == (BANDS, 3, 16, 16)
    # 2020-03-01 (step 0, 100), day 123 = 2020-05-02 (step 1, 101), 2020-09-01 (step 2, 102)
    assert x[0, :, 0, 0].tolist() == pytest.approx([100.0, 101.0, 102.0], abs=1e-4)
    assert parse_date("2020123").isoformat() == "2020-05-02"


def test_stacks_that_cannot_be_samples_are_skipped_and_named(tmp_path):
    root = tmp_path / "data"
    stacks(root)
    (root / "place_1" / f"HLS_{DATES[0]}.tif").unlink()  # two dates of three
    write(root / "place_2" / "HLS_20200301_b.tif", 7)  # a fourth file, a repeated date
    for date in DATES:
        write(root / "place_3" / f"x_{date}.tif", 9, size=32 if date != DATES[1] else 40)
    for name in ("a.tif", "b.tif", "c.tif"):
        write(root / "place_4" / name, 5)  # no dates
    ds = build_dataset(config(root))
    reasons = {}
    for index in range(len(ds)):
        reasons.update(dict(ds[(index, 0)].skipped))
    assert "2 dates, where data.time_steps=3" in reasons[str(root / "place_1")]
    assert "4 dates" in reasons[str(root / "place_2")]
    assert "other sizes" in reasons[str(root / "place_3")]
    assert "no date in its name" in reasons[str(root / "place_4")]
    assert str(root / "place_0") not in reasons


def test_a_stack_trains_through_the_cube_tokenizer(tmp_path):
    stacks(tmp_path / "data")
    ds = build_dataset(config(tmp_path / "data"))
    model = create_model("mae_vit_tiny_patch16", in_chans=BANDS, patch_size=8,
                         tokenizer="cube", tubelet_size=1, decoder_depth=1)
    x = torch.stack([ds[(i, 1)].x for i in range(2)])  # [B, C, T, H, W]
    grid = model.tokenizer.grid(x.shape[1:])
    assert grid == (3, 2, 2)  # Prithvi's tubelet of one date
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :9] = True
    assert torch.isfinite(model(x, mask).loss)


def test_time_stacks_need_folders():
    with pytest.raises(ValueError, match="data.time_steps: time stacks are read from folders"):
        ImageDataConfig(time_steps=2, format="wds", root="/x")


def test_a_multi_page_tiff_is_a_stack_of_its_pages(tmp_path):
    root = tmp_path / "pages"
    root.mkdir()
    for place in range(2):  # 3 dates x 6 bands as 18 pages, dates outermost
        pages = np.stack([np.full((BANDS, 32, 32), 10 * place + t, np.uint16) for t in range(3)])
        tifffile.imwrite(root / f"place_{place}.tif", pages.reshape(3 * BANDS, 32, 32),
                         photometric="minisblack")
    cfg = config(root, stack="file")
    assert cfg.bands == list(range(BANDS))  # one date's bands, not the file's 18
    ds = build_dataset(cfg)
    x = ds[(1, 0)].x
    assert x.shape == (BANDS, 3, 16, 16)
    assert x[2, :, 0, 0].tolist() == pytest.approx([10.0, 11.0, 12.0], abs=1e-4)
    tifffile.imwrite(root / "place_9.tif", np.ones((2 * BANDS, 32, 32), np.uint16),
                     photometric="minisblack")  # two dates of three
    ds = build_dataset(config(root, stack="file"))
    reasons = dict(ds[(ds.stacks.index([root / "place_9.tif"]), 0)].skipped)
    assert "3 dates of 6" in reasons[str(root / "place_9.tif")]


def test_dates_and_place_reach_the_model_as_prithvis_tl_embeddings(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from mim.data import MaskingCollate
    from mim.masking import RandomMask

    root = tmp_path / "geo"
    for step, date in enumerate(DATES):  # UTM 32N, 10 m pixels: near 45.9 N, 7.5 E
        path = root / "place_0" / f"S2_{date}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", height=32, width=32, count=BANDS,
                           dtype="uint16", crs="EPSG:32632",
                           transform=from_origin(400000, 5090000, 10, 10)) as dst:
            dst.write(np.full((BANDS, 32, 32), 100 + step, np.uint16))
    ds = build_dataset(config(root, coords=True))
    sample = ds[(0, 0)]
    assert sample.coords.shape == (3, 4)
    assert sample.coords[:, :2].tolist() == [[2020, 61], [2020, 123], [2020, 245]]  # by date
    assert sample.coords[0, 2] == pytest.approx(45.95, abs=0.05)
    assert sample.coords[0, 3] == pytest.approx(7.72, abs=0.05)
    batch = MaskingCollate(RandomMask(0.75), (3, 2, 2), sample_dims=4)([(sample, 0)] * 2)
    assert batch.coords.shape == (2, 3, 4)
    model = create_model("mae_vit_tiny_patch16", in_chans=BANDS, patch_size=8,
                         tokenizer="cube", tubelet_size=1, decoder_depth=1, coords="both").eval()
    with_coords = model(batch.x, batch.mask, None, batch.coords).loss
    without = model(batch.x, batch.mask).loss  # works without them: nothing added
    unknown = model(batch.x, batch.mask, None, torch.full_like(batch.coords, float("nan"))).loss
    assert with_coords != without and torch.equal(unknown, without)


def test_date_and_place_embeddings_need_data_that_gives_them(tmp_path):
    from mim.config.compose import load
    from mim.config.errors import ConfigError

    stacks(tmp_path / "data")
    base = [f"data.root={tmp_path / 'data'}", "data.time_steps=3", "data.input_size=16",
            "model=mae_vit_tiny_patch16", "model.tokenizer=cube", "model.tubelet_size=1",
            "model.patch_size=8", "model.coords=both", "train.batch_size=2"]
    with pytest.raises(ConfigError, match="model.coords: 'both' needs each sample's dates"):
        load(base)
    assert load([*base, "data.coords=true"]).model.coords == "both"


def test_a_coords_file_gives_dates_and_places_the_names_do_not(tmp_path):
    root = tmp_path / "data"
    for name in ("a.tif", "b.tif", "c.tif"):
        write(root / "place_0" / name, 1)
    table = tmp_path / "coords.csv"
    table.write_text("path,date,lat,lon\nplace_0/a.tif,2021-06-01,-12.5,130.75\n"
                     "place_0/b.tif,2021-01-15,,\nplace_0/c.tif,2021123,,\n")
    ds = build_dataset(config(root, coords=True, coords_file=str(table)))
    coords = ds[(0, 0)].coords  # ordered by the table's dates: b, c, a
    assert coords[:, :2].tolist() == [[2021, 15], [2021, 123], [2021, 152]]
    assert coords[0, 2:].tolist() == [-12.5, 130.75]  # the first file's row has the place
    table.write_text("path,date\nplace_0/a.tif,June\n")
    with pytest.raises(ValueError, match="data.coords_file: line 2: 'June' is not a date"):
        config(root, coords=True, coords_file=str(table))
