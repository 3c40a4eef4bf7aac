"""Images (photos or rasters) with per-pixel class ids for ``mim eval segment``.

``data.root`` in one of these layouts (the first found):

- ADE20K's: ``images/training/*`` with ``annotations/training/*.png``, and ``validation`` beside
  each;
- mmseg's names: ``img_dir/train`` with ``ann_dir/train``, and ``val`` beside each;
- ``data.labels=<list file>``: lines ``image,annotation`` (paths relative to ``data.root``, or
  absolute).

Without a validation folder (or with a list file) ``data.val_fraction`` of the pairs is held
out, seeded by ``data.split_seed``. An annotation is an 8- or 16-bit one-channel PNG (or palette
PNG: its indices), or a one-band TIFF / ``.npy``, of class ids; an RGB annotation is refused.
Class names: ``classes.txt`` at the root (one per line, in id order), else ``class_<id>``.
Without ``data.root``: the built-in scenes (``segment_demo.py``). Images are read as in
pretraining (``data.reader``, the run's bands and statistics) and normalised whole; the core
crops, rescales and flips (``mim/data/segmentation.py``).

Time stacks (``data.time_steps=T``, Prithvi-EO's multi-temporal crop segmentation): one label
map for the T dates of a place. With ``data.stack=file`` an image is a raster of its T x C bands,
date-major, as in pretraining; with ``data.stack=folder`` an "image" is a folder of one raster
per date (ordered by the date in each name, ``data.date_pattern``) and its annotation is named
after the folder (``images/training/place_7/*.tif`` with ``annotations/training/place_7.png``).
A sample is then ``[C, T, H, W]`` with a ``[H, W]`` label; the heads average the dates' tokens.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.data.dataset import UnreadableSample
from mim.data.segmentation import SegmentItems, SegmentRules, pair_by_stem, scan, split_pairs
from mim.modalities.image import segment_demo
from mim.modalities.image.bands import folder_items, resolve
from mim.modalities.image.dataset import band_reader, dating, scan as scan_images
from mim.modalities.image.decode import read as read_picture
from mim.modalities.image.labelled import ImageEvalDataConfig
from mim.modalities.image.pictures import render_segmentation
from mim.modalities.image.raster import read_raster
from mim.modalities.image.stacks import RasterStacks
from mim.modalities.image.transforms import PretrainTransform, RasterTransform
from mim.spec import SegmentData

log = logging.getLogger("mim.data")

# (images, annotations) folder names per split, ADE20K's and mmseg's
LAYOUTS = ((("images", "training"), ("annotations", "training"), ("images", "validation"),
            ("annotations", "validation")),
           (("img_dir", "train"), ("ann_dir", "train"), ("img_dir", "val"), ("ann_dir", "val")))
ID_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")  # one channel of integers


def segment_root(cfg: ImageEvalDataConfig) -> Path:
    """data.root, or the built-in scenes (for the photo demos; other demos have no maps)."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if cfg.demo not in ("photos", "segment"):
        raise FileNotFoundError(f"data.root: the built-in '{cfg.demo}' set has no label maps; "
                                "give data.root=<images and annotations>")
    return segment_demo.segment_demo_folder()


def _layout(root: Path) -> tuple[Path, Path, Path, Path] | None:
    for layout in LAYOUTS:
        folders = tuple(root.joinpath(*parts) for parts in layout)
        if folders[0].is_dir() and folders[1].is_dir():
            return folders
    return None


def _listed(root: Path, list_file: str) -> list[tuple[Path, Path]]:
    """The pairs of a list file of ``image,annotation`` lines."""
    path = Path(list_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.labels: {path} is not a file")
    pairs, missing = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2:
            raise ValueError(f"data.labels: line {number} of {path} is not 'image,annotation'")
        image, label = (root / c for c in cells)
        (pairs if image.is_file() and label.is_file() else missing).append((image, label))
    if missing:
        log.warning("data.labels: %d listed pairs with a missing file left out (first: %s)",
                    len(missing), missing[0][0] if not missing[0][0].is_file() else missing[0][1])
    return pairs


def stacked_by_folder(cfg: ImageEvalDataConfig) -> bool:
    """Whether an "image" is a folder of one raster per date (``data.stack=folder``)."""
    return cfg.time_steps > 1 and cfg.stack == "folder"


def _holds_items(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def _images(cfg: ImageEvalDataConfig, folder: Path) -> list[Path]:
    """The image files under ``folder``, or its stack folders (those holding image files)."""
    if not folder.is_dir():
        return []
    files = scan_images(folder)
    return sorted({f.parent for f in files} - {folder}) if stacked_by_folder(cfg) else files


def _folder_pairs(cfg: ImageEvalDataConfig, images: Path, labels: Path
                  ) -> list[tuple[Path, Path]]:
    found = [p for p in sorted(labels.iterdir()) if p.is_file() and not p.name.startswith(".")
             ] if labels.is_dir() else []
    return pair_by_stem(_images(cfg, images), found, str(images))


def splits(cfg: ImageEvalDataConfig) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(training pairs, held-out pairs) of the layout under the root."""
    root = segment_root(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    if cfg.labels != "folders":
        return split_pairs(_listed(root, cfg.labels), cfg.val_fraction, cfg.split_seed)
    layout = _layout(root)
    if layout is None:
        raise FileNotFoundError(
            f"data.root: {root} has neither images/training + annotations/training (ADE20K) "
            "nor img_dir/train + ann_dir/train (mmseg); or give data.labels=<a file of "
            "image,annotation lines>")
    train = _folder_pairs(cfg, layout[0], layout[1])
    if _holds_items(layout[2]):
        return train, _folder_pairs(cfg, layout[2], layout[3])
    return split_pairs(train, cfg.val_fraction, cfg.split_seed)


def class_names(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_label(path: Path) -> np.ndarray:
    """An annotation's class ids [H, W]; an RGB picture is refused."""
    suffix = path.name.lower()
    if suffix.endswith((".tif", ".tiff", ".npy", ".npz")):
        values = read_raster(path, path.name).values  # [C, H, W]
        if values.shape[0] != 1 or values.dtype.kind not in "iub":
            raise UnreadableSample(f"{values.shape[0]} bands of {values.dtype}, where an "
                                   "annotation is one band of integer class ids",
                                   "annotation that is not one band of class ids")
        return values[0]
    with Image.open(path) as image:
        if image.mode not in ID_MODES:
            raise UnreadableSample(f"an {image.mode} picture, where class ids (one channel) "
                                   "are expected", "RGB annotation")
        return np.asarray(image)


def image_shape(cfg: ImageEvalDataConfig, path: Path) -> tuple[int, int]:
    """(H, W) from the header: of the image, or of the first date of a stack folder."""
    if path.is_dir():
        path = scan_images(path)[0]
    header = read_raster(path, path.name, cfg.layout, pixels=False)
    return header.height, header.width


class Reader:
    """(image, annotation) -> (x [C, H, W] normalised as in pretraining, ids [H, W]); a
    picture's whole-size read, a raster's bands (NaN: no data)."""

    def __init__(self, cfg: ImageEvalDataConfig):
        self.bands = band_reader(cfg)
        self.view = RasterTransform(cfg) if self.bands is not None else PretrainTransform(cfg)
        self.steps = cfg.time_steps if stacked_by_folder(cfg) else 1
        self.dating = dating(cfg, Path(cfg.root or ".").expanduser()) if self.steps > 1 else None

    def stack(self, folder: Path) -> torch.Tensor:
        """A stack folder's dates, in date order -> [C, T, H, W] normalised."""
        stacks = RasterStacks([scan_images(folder)], lambda x, seed: self.view.normalise(x),
                              self.bands, self.steps, self.dating)
        return stacks.load(0, 0)[0]

    def __call__(self, image: Path, label: Path) -> tuple[torch.Tensor, np.ndarray]:
        if self.steps > 1:
            x = self.stack(image)  # [C, T, H, W]
        elif self.bands is not None:  # [C, H, W], or [C, T, H, W] for a stack in one file
            x = self.view.normalise(torch.from_numpy(self.bands(image, image.name)))
        else:
            try:
                picture = read_picture(image)  # the whole picture, uint8 [3, H, W]
            except UnreadableSample:
                raise
            except Exception as exc:  # PIL raises many types
                raise UnreadableSample(f"{type(exc).__name__}: {exc}", "unreadable image") from exc
            x = self.view.normalise(picture.pixels)
        ids = read_label(label)
        if tuple(ids.shape) != tuple(x.shape[-2:]):
            raise UnreadableSample(f"annotation {ids.shape[1]}x{ids.shape[0]}, image "
                                   f"{x.shape[-1]}x{x.shape[-2]}",
                                   "annotation of another size than its image")
        return x, ids


def resolve_segment(cfg: ImageEvalDataConfig) -> ImageEvalDataConfig:
    """The reader, bands and statistics decided from the training images (as a run's)."""
    train, _ = splits(cfg)
    images = [image for image, _ in train]
    if stacked_by_folder(cfg):  # the stacks' files, as pretraining resolves them
        images = [f for folder in images for f in scan_images(folder)]
    return resolve(cfg, folder_items(images))


def segmentation(cfg: ImageEvalDataConfig, rules: SegmentRules) -> SegmentData:
    root = segment_root(cfg)
    train, val = splits(cfg)
    names = class_names(root)
    kept = [scan(pairs, read_label, lambda p: image_shape(cfg, p), rules, names, where,
                 key=f"image layout={cfg.layout}")
            for pairs, where in ((train, "training pairs"), (val, "held-out pairs"))]
    count = max(k.num_classes for k in kept)
    names = names or [f"class_{i}" for i in range(count)]
    read = Reader(cfg)
    nodata = read.bands is not None and read.bands.nodata is not None
    log.info("segmentation: %d training, %d held-out images, %d classes, from %s%s",
             len(kept[0].pairs), len(kept[1].pairs), count, root,
             "" if cfg.root else " (built-in demo scenes)")
    return SegmentData(SegmentItems(kept[0].pairs, read, rules, nodata=nodata),
                       SegmentItems(kept[1].pairs, read, rules, nodata=nodata), names, rank=2,
                       flips=(0.0, cfg.hflip), scale=(0.5, 2.0),
                       render=lambda *a: render_segmentation(cfg, *a))
