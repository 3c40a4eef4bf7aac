"""A recursive image folder: any format PIL reads, labels optional, broken files skipped.

Mode handling: palette and RGBA images are flattened to RGB, grayscale is repeated to three
channels, 16-bit and float images are scaled to 8 bits before that. Files PIL cannot decode
(truncated, zero-byte, not an image, too large) raise ``UnreadableSample``; the core's
``MimDataset`` replaces them and reports path and reason.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.data import MimDataset, UnreadableSample
from mim.files import file_labels, find_files
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.demo import demo_files, lfw_split
from mim.modalities.image.transforms import PretrainTransform

log = logging.getLogger("mim.data")


def image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def scan(root: Path) -> list[Path]:
    extensions = image_extensions()
    return find_files(root, lambda name: Path(name).suffix.lower() in extensions, "image files")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha dropped, 16-bit and float rescaled)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else values * 0.0
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


class ImageFolder(MimDataset):
    def __init__(self, files: list[Path], labels: list[int], transform: PretrainTransform,
                 classes: list[str] | None = None):
        self.files, self.labels, self.transform = files, labels, transform
        self.classes = classes or []

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image.load()
                rgb = to_rgb(image)
        except Exception as exc:  # PIL raises many types (OSError, DecompressionBombError, ...)
            if path.exists() and path.stat().st_size == 0:
                raise UnreadableSample("empty file (0 bytes)", "empty") from exc
            raise UnreadableSample(f"{type(exc).__name__}: {exc}",
                                   "not an image (cannot be decoded)") from exc
        return self.transform(rgb, seed), self.labels[index]


def build_dataset(cfg: ImageDataConfig) -> ImageFolder:
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
