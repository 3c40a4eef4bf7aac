"""A recursive image folder: photos or scientific rasters, labels optional, broken files skipped.

Photos are read by ``decode.py`` (JPEGs by libjpeg-turbo, reduced where the view allows; every
mode to 8-bit RGB); rasters by ``raster.py`` to the run's bands (``bands.py``: every band at its
own bit depth). Which of the two a folder is, and its bands, is decided once in validation
(``resolve_data``). Files that cannot be used (truncated, zero-byte, not an image, too large,
other bands) raise ``UnreadableSample``; the core's ``MimDataset`` replaces them and reports
path and reason.
"""
from __future__ import annotations

import copy
import logging
import re
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from mim.data import MimDataset, UnreadableSample
from mim.data.files import file_labels, find_files, stamp
from mim.modalities.image import raster_demo, segment_demo
from mim.modalities.image.bands import (BandReader, band_statistics, folder_items, resolve,
                                        run_band_names)
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.decode import read, to_rgb  # noqa: F401  (to_rgb: the modes' rule)
from mim.modalities.image.demo import demo_files, lfw_split
from mim.modalities.image.raster import ARRAY_SUFFIXES
from mim.modalities.image.shards import ImageShards, build_shards, shard_items
from mim.modalities.image.stacks import Dating, RasterStacks, read_coords_file, stack_folders
from mim.modalities.image.transforms import PretrainTransform, RasterTransform, Transform

log = logging.getLogger("mim.data")


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def is_image_file(name: str) -> bool:
    """A name with a suffix PIL reads, or an array file (``.npy``, ``.npz``): the rule of a
    folder, of shards and of ``mim data pack``."""
    suffix = Path(name).suffix.lower()
    return suffix in image_extensions() or suffix in ARRAY_SUFFIXES


def scan(root: Path) -> list[Path]:
    return find_files(root, is_image_file, "image files")


class ImageFolder(MimDataset):
    """Image files; ``bands`` (a ``BandReader``): read as rasters to the run's bands, else as
    photos (``decode.py``)."""

    def __init__(self, files: list[Path], labels: list[int], transform: Transform,
                 classes: list[str] | None = None, bands: BandReader | None = None,
                 dating: Dating | None = None):
        self.files, self.labels, self.transform = files, labels, transform
        self.classes = classes or []
        self.bands = bands
        self.dating = dating  # where each raster's date and place come from (data.coords)
        self.nodata = bands is not None and bands.nodata is not None

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def at_shape(self, shape: tuple[int, ...]) -> "ImageFolder":
        """The same files cropped to ``shape`` (C, H, W) (progressive resolution)."""
        other = copy.copy(self)
        other.transform = self.transform.resized(shape[-1])
        return other

    def coords(self, index: int) -> torch.Tensor | None:
        """[1, 4]: the raster's date (from its name) and place (``data.coords``)."""
        return None if self.dating is None else self.dating.coords([self.files[index]])

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        if self.bands is not None:
            x = torch.from_numpy(self.bands(path, path.name))  # [C, H, W], NaN: no data
            return self.transform(x, seed), self.labels[index]
        try:
            # a JPEG decodes reduced as far as this seed's view allows
            picture = read(path, lambda w, h: self.transform.resolution(w, h, seed))
        except UnreadableSample:  # a 16-bit picture among photos
            raise
        except Exception as exc:  # PIL raises many types (OSError, DecompressionBombError, ...)
            if path.exists() and path.stat().st_size == 0:
                raise UnreadableSample("empty file (0 bytes)", "empty") from exc
            raise UnreadableSample(f"{type(exc).__name__}: {exc}",
                                   "not an image (cannot be decoded)") from exc
        return self.transform(picture, seed), self.labels[index]


def band_reader(cfg: ImageDataConfig) -> BandReader | None:
    """The raster reader of a resolved config (None: photos)."""
    return BandReader(cfg) if cfg.reader == "raster" else None


def pretrain_view(cfg: ImageDataConfig) -> Transform:
    return RasterTransform(cfg) if cfg.reader == "raster" else PretrainTransform(cfg)


@lru_cache(maxsize=4)
def _scan(root: str, stamp: tuple | None) -> tuple[Path, ...]:
    return tuple(scan(Path(root)))  # validation and the plan index a folder once


def data_files(cfg: ImageDataConfig) -> tuple[Path, list[Path]]:
    """(root, files) of a folder config: data.root's, or the built-in demo set's."""
    if cfg.root:
        root = Path(cfg.root).expanduser()
        return root, list(_scan(str(root), stamp(str(root))))
    if cfg.demo == "lfw":
        return lfw_split("train")
    if cfg.demo == "raster":
        return raster_demo.pretrain_files()
    if cfg.demo == "segment":
        return segment_demo.training_images()
    return demo_files()


def resolve_data(cfg: ImageDataConfig) -> ImageDataConfig:
    """The data config with what its files decide (``bands.resolve``): validation's hook. A
    data.root that is not there is left to the plan, which names it as it indexes the data."""
    if cfg.root and cfg.format != "wds" and not Path(cfg.root).expanduser().is_dir():
        return cfg
    if cfg.format == "wds":
        return resolve(cfg, shard_items(cfg, is_image_file))
    root, files = data_files(cfg)
    if cfg.coords_file:  # its problems are config errors, said before any compute
        read_coords_file(cfg.coords_file, root)
    return resolve(cfg, folder_items(files))


def build_dataset(cfg: ImageDataConfig) -> ImageFolder | ImageShards | RasterStacks:
    if cfg.reader == "auto":  # not through validation (a test, a script): resolve here
        cfg = resolve_data(cfg)
    if cfg.format == "wds":
        return build_shards(cfg, is_image_file, pretrain_view(cfg), band_reader(cfg))
    root, files = data_files(cfg)
    if cfg.time_steps > 1:
        stacks = [[f] for f in files] if cfg.stack == "file" else stack_folders(files)
        log.info("image data: %d time stacks (%s) of %d files under %s", len(stacks),
                 "files" if cfg.stack == "file" else "folders", len(files), root)
        return RasterStacks(stacks, pretrain_view(cfg), BandReader(cfg), cfg.time_steps,
                            dating(cfg, root), cfg.coords)
    labels, classes = file_labels(files, root, cfg.labels)
    log.info("image data: %d files under %s%s", len(files), root,
             "" if cfg.root else f" (built-in demo: {cfg.demo})")
    return ImageFolder(files, labels, pretrain_view(cfg), classes, band_reader(cfg),
                       dating(cfg, root) if cfg.coords and cfg.reader == "raster" else None)


def dating(cfg: ImageDataConfig, root: Path) -> Dating:
    """The dates and places of a config's files: ``data.coords_file``, the names, GeoTIFFs."""
    table = read_coords_file(cfg.coords_file, root) if cfg.coords_file else {}
    return Dating(re.compile(cfg.date_pattern), table)


def data_stats(cfg: ImageDataConfig) -> dict:
    """Per-band statistics of a resolved config's files (``mim data stats``): those of
    ``data.mean=auto``, over ``data.stats_files`` files."""
    items = shard_items(cfg, is_image_file) if cfg.format == "wds" else folder_items(
        data_files(cfg)[1])
    reader = BandReader(cfg)
    return band_statistics(lambda i: reader(items.open(i), items.name(i)), items,
                           run_band_names(cfg), cfg.stats_files).as_dict()
