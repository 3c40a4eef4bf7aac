"""Labelled images for ``mim eval``: class folders, or the built-in face / non-face demo set.

``data.root`` holds one folder per class (or use ``data.labels=<csv>``); ``data.val_root`` is
the held-out set laid out the same way, or, without one, ``data.val_fraction`` of every class is
held out (seeded by ``data.split_seed``). Training views are MAE's fine-tuning / linear-probe
crops (RandomResizedCrop from ``min_scale``, flip), for fine-tuning with RandAugment and random
erasing (``data.randaug``, ``data.reprob``; ``augment.py``); test views are the centre crop after
resizing the short side to ``input_size / crop_pct``.

Without ``data.root``: the face / non-face demo set (``demo.py``), read like any class folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mim.data.labelled import check_eval_labels, labelled_files, split_files
from mim.data.shards import check_eval_format
from mim.modalities.image import raster_demo
from mim.modalities.image.bands import folder_items, resolve
from mim.modalities.image.config import IMAGENET_MEAN, ImageDataConfig, photo_stats
from mim.modalities.image.augment import FinetuneTransform, check_finetune_augment
from mim.modalities.image.dataset import ImageFolder, band_reader, scan
from mim.modalities.image.demo import lfw_folder
from mim.modalities.image.transforms import (CentreTransform, PretrainTransform,
                                             RasterCentreTransform, RasterTransform, Transform)
from mim.spec import LabelledData

log = logging.getLogger("mim.data")


@dataclass
class ImageEvalDataConfig(ImageDataConfig):
    labels: str = "folders"  # folders | path to a CSV of "relative/path,label"
    val_root: Optional[str] = None  # held-out class folders; None: split data.root
    val_fraction: float = 0.25  # held-out fraction of data.root when there is no val_root
    split_seed: int = 0  # seed of that split
    min_scale: float = 0.08  # training views: RandomResizedCrop(min_scale - 1), MAE A.1
    crop_pct: float = 0.875  # test view: short side to input_size / crop_pct, centre crop
    # fine-tuning's training view adds these (MAE Table 11; augment.py): timm's RandAugment
    # spec ('' disables) and the probability of random erasing
    randaug: str = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25  # probability of random erasing (fine-tuning)

    def __post_init__(self) -> None:
        check_eval_format(self.format)
        super().__post_init__()
        check_eval_labels(self.labels, self.val_fraction)
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"data.crop_pct: must be in (0, 1], got {self.crop_pct}")
        # RandAugment fills with the photo's mean colour; rasters skip it (``_views``)
        check_finetune_augment(self.randaug, self.reprob, self.input_size,
                               photo_stats(self)[0] if self.reader == "photo" else IMAGENET_MEAN)


def labelled_root(cfg: ImageEvalDataConfig) -> Path:
    """data.root, or the built-in labelled demo set (LFW faces, or the raster scenes)."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    return raster_demo.labelled_folder() if cfg.demo == "raster" else lfw_folder()


def resolve_eval(cfg: ImageEvalDataConfig) -> ImageEvalDataConfig:
    """The labelled data's reader, bands and statistics (``bands.resolve``), as a run's."""
    return resolve(cfg, folder_items(scan(labelled_root(cfg))))


def _views(cfg: ImageEvalDataConfig) -> tuple[Transform, Transform, Transform]:
    """(training view, fine-tuning's training view, test view) of photos or rasters."""
    if cfg.reader == "raster":  # RandAugment and erasing are defined on 8-bit RGB only
        if cfg.randaug or cfg.reprob:
            log.info("fine-tuning on rasters: crops and flips only (data.randaug and "
                     "data.reprob apply to photos)")
        return RasterTransform(cfg), RasterTransform(cfg), RasterCentreTransform(cfg,
                                                                                   cfg.crop_pct)
    return PretrainTransform(cfg), FinetuneTransform(cfg), CentreTransform(cfg, cfg.crop_pct)


def labelled(cfg: ImageEvalDataConfig) -> LabelledData:
    root = labelled_root(cfg)
    files, labels, classes = labelled_files(root, cfg.labels, None, "data.root", scan)
    if not files:
        raise FileNotFoundError(f"data.labels: no labelled images under {root}")
    train_files, train_labels, val_files, val_labels = split_files(
        files, labels, classes, cfg.val_root, cfg.labels, cfg.val_fraction, cfg.split_seed, scan)
    train_view, strong_view, test_view = _views(cfg)
    bands = band_reader(cfg)
    log.info("labelled images: %d training, %d held out, %d classes from %s%s",
             len(train_files), len(val_files), len(classes), root,
             "" if cfg.root else f" (built-in {cfg.demo if cfg.demo == 'raster' else 'LFW'} "
             "demo)")
    return LabelledData(
        train=ImageFolder(train_files, train_labels, train_view, classes, bands),
        train_strong=ImageFolder(train_files, train_labels, strong_view, classes, bands),
        train_plain=ImageFolder(train_files, train_labels, test_view, classes, bands),
        val=ImageFolder(val_files, val_labels, test_view, classes, bands), classes=classes)


def inputs(cfg: ImageEvalDataConfig, path: Path) -> ImageFolder:
    """An image file, or every image under a folder, in the test view (``mim visualize``)."""
    files = [path] if path.is_file() else scan(path)
    return ImageFolder(files, [-1] * len(files), _views(cfg)[2], bands=band_reader(cfg))
