"""A recursive image folder: any format PIL reads, labels optional, broken files skipped.

Files are read by ``decode.py`` (JPEGs by libjpeg-turbo, reduced where the view allows; every
mode to 8-bit RGB). Files that cannot be decoded (truncated, zero-byte, not an image, too large)
raise ``UnreadableSample``; the core's ``MimDataset`` replaces them and reports path and reason.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from mim.data import MimDataset, UnreadableSample
from mim.data.files import file_labels, find_files
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.decode import read, to_rgb  # noqa: F401  (to_rgb: the modes' rule)
from mim.modalities.image.demo import demo_files, lfw_split
from mim.modalities.image.shards import ImageShards, build_shards
from mim.modalities.image.transforms import PretrainTransform

log = logging.getLogger("mim.data")


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def is_image_file(name: str) -> bool:
    """A name with a suffix PIL reads (the rule of a folder, of shards and of ``mim data pack``)."""
    return Path(name).suffix.lower() in image_extensions()


def scan(root: Path) -> list[Path]:
    return find_files(root, is_image_file, "image files")


class ImageFolder(MimDataset):
    def __init__(self, files: list[Path], labels: list[int], transform: PretrainTransform,
                 classes: list[str] | None = None):
        self.files, self.labels, self.transform = files, labels, transform
        self.classes = classes or []

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def at_shape(self, shape: tuple[int, ...]) -> "ImageFolder":
        """The same files cropped to ``shape`` (3, H, W) (progressive resolution)."""
        return ImageFolder(self.files, self.labels, self.transform.resized(shape[-1]),
                           self.classes)

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            # a JPEG decodes reduced as far as this seed's view allows
            picture = read(path, lambda w, h: self.transform.resolution(w, h, seed))
        except Exception as exc:  # PIL raises many types (OSError, DecompressionBombError, ...)
            if path.exists() and path.stat().st_size == 0:
                raise UnreadableSample("empty file (0 bytes)", "empty") from exc
            raise UnreadableSample(f"{type(exc).__name__}: {exc}",
                                   "not an image (cannot be decoded)") from exc
        return self.transform(picture, seed), self.labels[index]


def build_dataset(cfg: ImageDataConfig) -> ImageFolder | ImageShards:
    if cfg.format == "wds":
        return build_shards(cfg, is_image_file)
    if cfg.root:
        root = Path(cfg.root).expanduser()
        files = scan(root)
    elif cfg.demo == "lfw":
        root, files = lfw_split("train")
    else:
        root, files = demo_files()
    labels, classes = file_labels(files, root, cfg.labels)
    log.info("image data: %d files under %s%s", len(files), root,
             "" if cfg.root else f" (built-in demo: {cfg.demo})")
    return ImageFolder(files, labels, PretrainTransform(cfg), classes)
