"""The image modality's built-in demo sets, which need no download.

Pretraining: scikit-image's bundled photographs. Evaluation (and ``data.demo=lfw``): scikit-image
ships 200 grayscale 25x25 crops from Labeled Faces in the Wild, 100 faces then 100 non-faces
(``skimage.data.lfw_subset``). They are written once as PNG files into
``$MIM_CACHE_DIR/demo_image/lfw_v1/{face,nonface}`` (default ``~/.cache/mim``), published by an
atomic rename, and read like any class folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from mim.data.cache import cache_root
from mim.data.files import file_labels, find_files
from mim.data.labelled import stratified_split

log = logging.getLogger("mim.data")

DEMO_SUFFIXES = (".png", ".jpg")  # skip the bundle's multi-page TIFFs and GIF


def demo_files() -> tuple[Path, list[Path]]:
    """scikit-image's bundled real photographs (astronaut, coffee, chelsea, rocket, ...)."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    return root, sorted(p for p in root.iterdir() if p.suffix in DEMO_SUFFIXES)


LFW_VERSION = "lfw_v1"
LFW_CLASSES = ("face", "nonface")  # lfw_subset(): rows 0-99 faces, 100-199 non-faces


def cache_dir() -> Path:
    return cache_root() / "demo_image"


def lfw_folder() -> Path:
    """The demo set as class folders of PNG files, written on first use."""
    folder = cache_dir() / LFW_VERSION
    if folder.is_dir():
        return folder
    import skimage.data

    faces = skimage.data.lfw_subset()  # [200, 25, 25] float in [0, 1]
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    for index, face in enumerate(faces):
        name = LFW_CLASSES[index * len(LFW_CLASSES) // len(faces)]
        (tmp / name).mkdir(parents=True, exist_ok=True)
        pixels = (face * 255.0).round().astype(np.uint8)  # [25, 25]
        Image.fromarray(pixels, mode="L").save(tmp / name / f"{index:03d}.png")
    try:
        tmp.rename(folder)  # atomic publish; a concurrent writer may have won
        log.info("demo images: wrote the LFW face / non-face set into %s", folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def lfw_split(part: str, fraction: float = 0.25, seed: int = 0) -> tuple[Path, list[Path]]:
    """(root, files) of the demo set's ``train`` or ``val`` part (pretraining sees ``train``)."""
    root = lfw_folder()
    files = find_files(root, lambda name: name.endswith(".png"), "demo images")
    labels, _ = file_labels(files, root, "folders")
    train, held = stratified_split(labels, fraction, seed)
    return root, [files[i] for i in (train if part == "train" else held)]
