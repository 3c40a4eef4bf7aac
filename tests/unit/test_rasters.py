"""Scientific rasters in modality=image: every band at its bit depth, chosen by index or name,
normalised by their own statistics, files of other bands skipped and named, nodata never scored."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import mim  # noqa: F401
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mim.data import MaskingCollate
from mim.masking import RandomMask
from mim.models.factory import create_model
from mim.modalities.image.bands import folder_items, resolve
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset, resolve_data
from mim.modalities.image.raster import RasterError, read_raster

BANDS = 13
NAMES = [f"B{i:02d}" for i in range(1, BANDS + 1)]


def gdal_metadata(names: list[str]) -> str:
    items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
                    for i, n in enumerate(names))
    return f"<GDALMetadata>{items}</GDALMetadata>"


def write_tif(path: Path, x: np.ndarray, names: list[str] | None = None,
              nodata: str | None = None) -> Path:
    tags = []
    if names:
        tags.append((42112, "s", 0, gdal_metadata(names), True))
    if nodata is not None:
        tags.append((42113, "s", 0, nodata, True))
    tifffile.imwrite(path, x, photometric="minisblack", planarconfig="separate", extratags=tags)
    return path


def scenes(root: Path, count: int = 6, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(count):
        x = rng.integers(200, 60000, (BANDS, size, size)).astype(np.uint16)  # [C, H, W]
        write_tif(root / f"scene_{i:02d}.tif", x, NAMES)
        arrays.append(x)
    return arrays


def resolved(root: Path, **keys) -> ImageDataConfig:
    return resolve_data(ImageDataConfig(root=str(root), **{"input_size": 16, **keys}))


def test_uint16_bands_are_kept_and_auto_stats_are_numpys_per_band_mean(tmp_path):
    arrays = scenes(tmp_path / "data")
    cfg = resolved(tmp_path / "data")
    assert cfg.reader == "raster" and cfg.dtype == "uint16" and cfg.bands == list(range(BANDS))
    assert cfg.band_names == NAMES  # the files' GDAL band descriptions
    stacked = np.stack(arrays).astype(np.float64)  # [N, C, H, W]
    np.testing.assert_allclose(cfg.mean, stacked.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(cfg.std, stacked.std(axis=(0, 2, 3)), rtol=1e-6)
    sample = build_dataset(cfg)[(0, 7)]
    assert sample.x.shape == (BANDS, 16, 16) and sample.x.dtype == torch.float32


def test_brightness_is_visible_to_the_model(tmp_path):
    """Two scenes that differ only by a factor of brightness give different samples: min-max
    scaling per image would have made them one."""
    base = np.random.default_rng(1).integers(100, 20000, (BANDS, 32, 32)).astype(np.uint16)
    root = tmp_path / "data"
    root.mkdir()
    write_tif(root / "dim.tif", base)
    write_tif(root / "bright.tif", base * 2)
    ds = build_dataset(resolved(root, mean=[0.0] * BANDS, std=[1.0] * BANDS, min_scale=1.0,
                                hflip=0.0))
    by_name = {ds.files[i].name: ds[(i, 3)].x for i in range(len(ds))}
    torch.testing.assert_close(by_name["bright.tif"], 2 * by_name["dim.tif"])


def test_a_file_of_other_bands_is_skipped_and_named_never_zero_filled(tmp_path):
    scenes(tmp_path / "data", count=5)
    odd = write_tif(tmp_path / "data" / "scene_99.tif",
                    np.ones((BANDS - 1, 32, 32), np.uint16) * 7)
    ds = build_dataset(resolved(tmp_path / "data"))
    index = ds.files.index(odd)
    sample = ds[(index, 0)]
    assert sample.skipped[0][0] == str(odd)
    assert "12 bands" in sample.skipped[0][1] and "13" in sample.skipped[0][1]


def test_bands_by_index_and_by_name_pick_the_same_values(tmp_path):
    arrays = scenes(tmp_path / "data", count=3)
    by_index = resolved(tmp_path / "data", bands=[3, 2, 1], mean=[0.0] * 3, std=[1.0] * 3,
                        min_scale=1.0, hflip=0.0, input_size=32)
    by_name = resolved(tmp_path / "data", bands=["B04", "B03", "B02"], mean=[0.0] * 3,
                       std=[1.0] * 3, min_scale=1.0, hflip=0.0, input_size=32)
    assert by_index.bands == by_name.bands == [3, 2, 1]
    a, b = build_dataset(by_index), build_dataset(by_name)
    index = a.files.index(tmp_path / "data" / "scene_00.tif")
    torch.testing.assert_close(a[(index, 0)].x, b[(index, 0)].x)
    torch.testing.assert_close(a[(index, 0)].x, torch.from_numpy(
        arrays[0][[3, 2, 1]].astype(np.float32)))  # a full, unflipped crop: the file's values
    with pytest.raises(ValueError, match="data.bands: 'B99' is not a band"):
        resolved(tmp_path / "data", bands=["B99"])
    with pytest.raises(ValueError, match="data.mean: 2 values for 3 bands"):
        resolved(tmp_path / "data", bands=[0, 1, 2], mean=[1.0, 2.0], std=[1.0] * 3)


def test_user_band_names_name_files_that_give_none(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_tif(root / "a.tif", np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16))
    cfg = resolved(root, band_names=["nir", "red", "green"], bands=["red"], mean=[0.0],
                   std=[1.0])
    assert cfg.bands == [1] and cfg.band_names == ["nir", "red", "green"]
    with pytest.raises(ValueError, match="data.band_names: 2 names for files of 3 bands"):
        resolved(root, band_names=["nir", "red"])


def test_single_channel_16_bit_microscopy_trains_on_one_channel(tmp_path):
    root = tmp_path / "cells"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)).save(root / f"{i}.png")
    cfg = resolved(root)
    assert cfg.reader == "raster" and cfg.bands == [0] and cfg.dtype == "uint16"
    assert build_dataset(cfg)[(0, 0)].x.shape == (1, 16, 16)


def test_npy_layouts(tmp_path):
    root = tmp_path / "arrays"
    root.mkdir()
    x = np.random.default_rng(3).random((5, 20, 24)).astype(np.float32)  # [C, H, W]
    np.save(root / "a.npy", x)
    np.savez(root / "b.npz", image=x)
    for name in ("a.npy", "b.npz"):
        assert np.array_equal(read_raster(root / name, name).values, x)
    np.save(tmp_path / "hwc.npy", np.moveaxis(x, 0, -1))  # [H, W, C]
    assert np.array_equal(read_raster(tmp_path / "hwc.npy", "hwc.npy", "hwc").values, x)


def test_bad_files_are_refused_with_their_reason(tmp_path):
    root = tmp_path / "data"
    scenes(root, count=4)
    cfg = resolved(root)
    reader = build_dataset(cfg).bands
    checks = {
        "float.tif": (np.ones((BANDS, 8, 8), np.float32), "dtype float32"),
        "nan.tif": (np.full((BANDS, 8, 8), np.nan, np.float32), "dtype float32"),
    }
    for name, (x, reason) in checks.items():
        write_tif(tmp_path / name, x)
        with pytest.raises(Exception, match=reason):
            reader(tmp_path / name, name)
    nan_reader = type(reader)(dataclasses.replace(cfg, dtype="float32"))
    with pytest.raises(Exception, match="NaN"):
        nan_reader(tmp_path / "nan.tif", "nan.tif")  # NaN without data.nodata=nan
    nodata_reader = type(reader)(dataclasses.replace(cfg, nodata=0))
    write_tif(tmp_path / "empty.tif", np.zeros((BANDS, 8, 8), np.uint16))
    with pytest.raises(Exception, match="every pixel is nodata"):
        nodata_reader(tmp_path / "empty.tif", "empty.tif")
    ranged = type(reader)(dataclasses.replace(cfg, valid_range=[0, 100]))
    with pytest.raises(Exception, match="outside data.valid_range"):
        ranged(root / "scene_00.tif", "scene_00.tif")
    huge = np.lib.format.open_memmap(tmp_path / "huge.npy", "w+", np.uint8, (1, 50000, 50000))
    del huge  # a sparse file: 2.5e9 pixels, refused before any is read
    with pytest.raises(RasterError, match="more than 2\\^31"):
        read_raster(tmp_path / "huge.npy", "huge.npy")


def test_nodata_is_declared_by_the_file_and_becomes_nan(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    x = np.full((BANDS, 16, 16), 500, np.uint16)
    x[:, :8, :] = 0  # the top half is no data
    write_tif(root / "edge.tif", x, nodata="0")
    cfg = resolved(root, mean=[0.0] * BANDS, std=[1.0] * BANDS, min_scale=1.0, hflip=0.0)
    assert cfg.nodata == 0.0  # what the file declares, taken and said
    ds = build_dataset(cfg)
    assert ds.nodata
    sample = ds[(0, 0)].x
    assert torch.isnan(sample[:, :7]).all() and (sample[:, 9:] == 500).all()


def test_nodata_patches_are_masked_first_and_never_scored():
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_patch16", in_chans=4, patch_size=8, decoder_depth=1,
                         norm_pix_loss=True)
    model.nodata = True
    x = torch.randn(1, 4, 32, 32)
    x[:, :, :16, :] = float("nan")  # the top 8 of 16 patches are no data
    collate = MaskingCollate(RandomMask(0.5), (4, 4), nodata=True)
    from mim.data import Sample
    batch = collate([(Sample(x[0], -1), 11)])
    assert batch.mask.sum() == 8  # the count unchanged: static shapes
    assert batch.mask[0, :8].all()  # the no-data patches are the masked ones
    loss = model(batch.x, batch.mask).loss
    assert torch.isfinite(loss)
    assert torch.isfinite(model.encode(batch.x).tokens).all()  # evaluation's features too
    other = batch.x.clone()
    other[:, :, 8:16, :] = 5.0  # a no-data patch now holds values: still never scored
    other[:, :, :8, :] = float("nan")
    assert torch.isfinite(model(other, batch.mask).loss)


def test_the_loss_counts_only_the_values_of_the_data():
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_patch16", in_chans=2, patch_size=8, decoder_depth=1,
                         norm_pix_loss=False)
    model.eval()
    x = torch.randn(2, 2, 16, 16)
    mask = torch.tensor([[True, True, False, False]] * 2)
    holed = x.clone()
    holed[:, :, 0, 0] = float("nan")  # one pixel of no data in patch 0
    model.nodata = True
    out = model(holed, mask)
    target = model.tokenizer.patchify(torch.nan_to_num(holed))  # [B, L, P]
    valid = model.tokenizer.patchify((~torch.isnan(holed)).float())
    error = ((out.pred - target) ** 2 * valid).sum(-1) / valid.sum(-1)  # [B, L]
    expected = (error * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected)
    model.nodata = False  # without nodata the plain MAE loss, exactly as before
    plain = model(x, mask)
    per_patch = ((plain.pred - model.tokenizer.patchify(x)) ** 2).mean(-1)
    assert torch.equal(plain.loss, (per_patch * mask).sum() / mask.sum())


def test_photos_stay_photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8), mode="L").save(root / f"{i}.png")
    cfg = resolved(root)
    assert cfg.reader == "photo" and cfg.bands == [0, 1, 2] and cfg.scale == 255.0
    assert build_dataset(cfg)[(0, 0)].x.shape == (3, 16, 16)  # grayscale repeated, as ImageNet


def test_a_folder_resolves_once_from_its_files(tmp_path):
    scenes(tmp_path / "data", count=2)
    files = sorted((tmp_path / "data").glob("*.tif"))
    cfg = resolve(ImageDataConfig(root=str(tmp_path / "data"), mean="auto", std="auto"),
                  folder_items(files))
    assert resolve(cfg, folder_items(files)) == cfg  # a resolved config is a fixed point


def test_data_stats_prints_and_writes_the_per_band_statistics(tmp_path):
    from mim.data.stats import stats_command

    arrays = scenes(tmp_path / "data", count=3)
    out = tmp_path / "stats.json"
    table = stats_command([f"data.root={tmp_path / 'data'}", f"out={out}",
                           "data.bands=[B02,B01]"])
    assert "B02" in table and "3 of 3 files read" in table
    import json
    stats = json.loads(out.read_text())
    assert stats["names"] == ["B02", "B01"]
    expected = np.stack(arrays).astype(np.float64)[:, [1, 0]].mean(axis=(0, 2, 3))
    np.testing.assert_allclose(stats["mean"], expected, rtol=1e-9)


def test_packed_rasters_keep_their_dtype_and_bands_and_give_the_folders_samples(tmp_path):
    from mim.data.pack import pack

    scenes(tmp_path / "data", count=4)
    pack(str(tmp_path / "data"), str(tmp_path / "shards"))
    folder = build_dataset(resolved(tmp_path / "data"))
    shards = build_dataset(resolve_data(ImageDataConfig(root=str(tmp_path / "shards"),
                                                        format="wds", input_size=16)))
    assert len(shards) == len(folder) == 4 and shards.bands is not None
    for index in range(4):
        torch.testing.assert_close(shards[(index, 9)].x, folder[(index, 9)].x)
