"""A recursive image folder: any format PIL reads, labels optional, broken files skipped.

Mode handling: palette and RGBA images are flattened to RGB, grayscale is repeated to three
channels, 16-bit and float images are scaled to 8 bits before that. Files PIL cannot decode
(truncated, zero-byte, not an image, too large) raise ``UnreadableSample``; the core's
``MimDataset`` replaces them and reports path and reason.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.data import MimDataset, UnreadableSample
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.transforms import PretrainTransform

log = logging.getLogger("mim.data")


def image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


DEMO_SUFFIXES = (".png", ".jpg")  # skip the bundle's multi-page TIFFs and GIF


def demo_files() -> tuple[Path, list[Path]]:
    """scikit-image's bundled real photographs (astronaut, coffee, chelsea, rocket, ...)."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    return root, sorted(p for p in root.iterdir() if p.suffix in DEMO_SUFFIXES)


def scan(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    extensions = image_extensions()
    files = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        files += [Path(folder) / n for n in sorted(names)
                  if Path(n).suffix.lower() in extensions and not n.startswith(".")]
    if not files:
        raise FileNotFoundError(f"data.root: no image files under {root}")
    return files


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
                raise UnreadableSample("empty file (0 bytes)") from exc
            raise UnreadableSample(f"{type(exc).__name__}: {exc}") from exc
        return self.transform(rgb, seed), self.labels[index]


def _labels(files: list[Path], root: Path, how: str) -> tuple[list[int], list[str]]:
    if how == "none":
        return [-1] * len(files), []
    if how == "folders":
        names = [f.parent.relative_to(root).parts[0] if f.parent != root else "" for f in files]
        classes = sorted(set(names))
        return [classes.index(n) for n in names], classes
    table = Path(how)
    if not table.is_file():
        raise FileNotFoundError(f"data.labels: '{how}' is not none, folders or a CSV file")
    with open(table, newline="") as f:
        rows = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}
    classes = sorted(set(rows.values()))
    return [classes.index(rows[str(p.relative_to(root))]) if str(p.relative_to(root)) in rows
            else -1 for p in files], classes


def build_dataset(cfg: ImageDataConfig) -> ImageFolder:
    if cfg.root:
        root = Path(cfg.root).expanduser()
        files = scan(root)
    else:
        root, files = demo_files()
    labels, classes = _labels(files, root, cfg.labels)
    log.info("image data: %d files under %s%s", len(files), root,
             "" if cfg.root else " (built-in demo photos)")
    return ImageFolder(files, labels, PretrainTransform(cfg), classes)
