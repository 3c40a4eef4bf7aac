"""Figure 12: the raster loader, mim's image dataset on 13-band uint16 GeoTIFF tiles against a
plain tifffile + numpy + torch peer, on one core; and mim's two TIFF readers against each other.

One item = ``dataset[(index, seed)]`` of ``build_dataset`` on a folder of rasters, as a loader
worker calls it: the file read (rasterio where it is importable, else tifffile:
``raster.read_raster``), the band count and dtype checks, the whole tile to float32, nodata (0,
as the files declare) to NaN, the seeded RandomResizedCrop box (``crop_box``, scale 0.2-1),
antialiased bilinear resize of the crop to 224 with the NaN-aware valid map where the crop holds
no data (``resize_bands``), the flip, ``(x / 10000 - mean) / std`` per band (``BandReader`` and
``RasterTransform``). The same dataset is timed twice: as it is (rasterio) and with
``raster.rasterio_available`` made to return False around each call (tifffile's reader).

The peer: ``tifffile.imread``, the same box (drawn by the same rule from the same seed) cut from
the uint16 array with numpy, to float32 and divided by the scale, ``F.interpolate`` (bilinear,
antialiased, 224), the same flip and the same per-band mean and std (the dataset's own, computed
once over the files); it reads no header and handles no nodata.

All three in one round robin, with the same items and seeds, one torch thread, in CPU seconds
of this process (``time.process_time``, as figures 5 and 8): the files lie in the page cache, and
a shared machine's other jobs do not inflate CPU time as they do wall-clock time.

The files: ``raster_demo``'s Sentinel-2-like scenes at 256 x 256 (13 bands, uint16, planar
one-page TIFFs with GDAL's band descriptions, wavelengths, nodata and a georeference; one scene
in five has a corner of nodata), written with tifffile into a temporary folder, removed after.
"""
from __future__ import annotations

import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.harness import Row, Settings, round_robin
from mim.data import sample_seed


def tiles(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` 13-band uint16 scenes of ``size`` x ``size`` as raster_demo writes its own."""
    from mim.modalities.image import raster_demo

    paths = []
    for index in range(count):
        path = folder / f"tile_{index:04d}.tif"
        raster_demo.write_scene(path, raster_demo.scene("pretrain", index, size)[0], "pretrain",
                                index)
        paths.append(path)
    return paths


@contextmanager
def tifffile_reader():
    """mim's TIFF reader without rasterio (``read_raster`` asks ``rasterio_available`` at
    every call)."""
    from mim.modalities.image import raster

    available = raster.rasterio_available
    raster.rasterio_available = lambda: False
    try:
        yield
    finally:
        raster.rasterio_available = available


def _mim(dataset, count: int, rasterio: bool):
    position = [0]

    def items() -> None:
        for _ in range(count):
            index = position[0]
            position[0] += 1
            if rasterio:
                x = dataset[(index % len(dataset), sample_seed(0, 0, index))].x
            else:
                with tifffile_reader():
                    x = dataset[(index % len(dataset), sample_seed(0, 0, index))].x
            assert x.shape[-1] == dataset.transform.size

    return items


def peer_item(path: Path, seed: int, size: int, scale: float, mean: torch.Tensor,
              std: torch.Tensor, area: tuple[float, float] = (0.2, 1.0),
              hflip: float = 0.5) -> torch.Tensor:
    """tifffile + numpy crop + ``F.interpolate``: float [C, size, size], normalised."""
    import tifffile

    from mim.modalities.image.transforms import crop_box

    values = tifffile.imread(path)  # [C, H, W] uint16
    rng = random.Random(seed)
    left, top, right, bottom = crop_box(values.shape[-1], values.shape[-2], area, (3 / 4, 4 / 3),
                                        rng)
    crop = torch.from_numpy(values[:, top:bottom, left:right].astype(np.float32)) / scale
    out = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True)[0]
    out = out.flip(-1) if rng.random() < hflip else out
    return (out - mean) / std


def _peer(paths: list[Path], count: int, size: int, scale: float, mean: list[float],
          std: list[float]):
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    position = [0]

    def items() -> None:
        for _ in range(count):
            index = position[0]
            position[0] += 1
            x = peer_item(paths[index % len(paths)], sample_seed(0, 0, index), size, scale,
                          mean_t, std_t)
            assert x.shape[-1] == size

    return items


def build(root: Path, size: int):
    """The raster dataset of ``root`` as ``mim train`` builds it (``data.scale=10000``,
    ``data.nodata=0``, per-band statistics computed over the files)."""
    from mim.modalities.image.config import ImageDataConfig
    from mim.modalities.image.dataset import build_dataset

    return build_dataset(ImageDataConfig(root=str(root), input_size=size, scale=10000,
                                         nodata=0, mean="auto", std="auto"))


def _check_peer(dataset, paths: list[Path], mean: list[float], std: list[float],
                size: int) -> None:
    """The peer computes what mim computes where a tile has no nodata (same box, flip, values)."""
    index = next(i for i in range(len(paths)) if i % 5 != 4)  # raster_demo: i % 5 == 4 has nodata
    seed = sample_seed(0, 0, index)
    ours = dataset[(index, seed)].x
    peer = peer_item(paths[index], seed, size, 10000.0, torch.tensor(mean).view(-1, 1, 1),
                     torch.tensor(std).view(-1, 1, 1))
    assert torch.allclose(ours, peer, atol=1e-4), float((ours - peer).abs().max())


def run(settings: Settings) -> list[Row]:
    from mim.modalities.image.raster import rasterio_available

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core: one worker's process
    size, (count, side) = (32, (4, 64)) if settings.quick else (224, (64, 256))
    work = Path(tempfile.mkdtemp(prefix="mim-bench-raster-"))
    try:
        paths = tiles(work, count, side)
        dataset = build(work, size)
        mean = dataset.transform.mean.flatten().tolist()  # the dataset's own statistics
        std = dataset.transform.std.flatten().tolist()
        _check_peer(dataset, paths, mean, std, size)
        cases = {"peer": _peer(paths, count, size, 10000.0, mean, std),
                 "tifffile": _mim(dataset, count, rasterio=False)}
        if rasterio_available():
            cases["rasterio"] = _mim(dataset, count, rasterio=True)
        t = round_robin(cases, settings, clock=time.process_time)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
    what = (f"samples per CPU second, 13 x {side} x {side} uint16 -> {size}, 1 thread, {count} "
            "per round")
    peer = f"peer {count / t.median('peer'):.1f} samples/CPU-s"
    rows = []
    if "rasterio" in cases:
        rows.append(Row(f"12. raster loader, rasterio: mim's dataset[(i, seed)] vs tifffile + "
                        f"numpy crop + F.interpolate ({what})", t.ratio("peer", "rasterio"),
                        f"mim {count / t.median('rasterio'):.1f} / {peer}"))
    rows.append(Row(f"12. raster loader, tifffile (rasterio off): mim's dataset[(i, seed)] vs "
                    f"the same peer ({what})", t.ratio("peer", "tifffile"),
                    f"mim {count / t.median('tifffile'):.1f} / {peer}"))
    if "rasterio" in cases:
        rows.append(Row("12. raster loader: mim with rasterio vs mim with tifffile (same items)",
                        t.ratio("tifffile", "rasterio"),
                        f"rasterio {count / t.median('rasterio'):.1f} / tifffile "
                        f"{count / t.median('tifffile'):.1f} samples/CPU-s"))
    return rows
