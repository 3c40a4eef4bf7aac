"""Labelled volumes for ``mim eval``: class folders or a CSV, or the demo phantoms by kind.

``data.root`` holds one folder per class (``data.labels=folders``) or any layout with
``data.labels=<csv>``; ``data.val_root`` is the held-out set, or ``data.val_fraction`` of every
class is held out (seeded by ``data.split_seed``). Without a root, the 24 demo phantoms
(``demo.py``) are labelled by kind: ellipsoids, tubes, textured. Training views are the
pretraining pipeline (random crop, flips); the test view is the centre crop, no flips.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from mim.data.labelled import check_eval_labels, labelled_files, split_files
from mim.data.shards import check_eval_format
from mim.modalities.volume.config import VolumeDataConfig
from mim.modalities.volume.dataset import VolumeDataset, scan
from mim.modalities.volume.transforms import VolumeTransform, crop_or_pad
from mim.spec import LabelledData

log = logging.getLogger("mim.data")


@dataclass
class VolumeEvalDataConfig(VolumeDataConfig):
    labels: str = "folders"  # folders | path to a CSV of "relative/path,label"
    val_root: Optional[str] = None  # held-out class folders; None: split data.root
    val_fraction: float = 0.25  # held-out fraction of data.root when there is no val_root
    split_seed: int = 0  # seed of that split

    def __post_init__(self) -> None:
        check_eval_format(self.format)
        super().__post_init__()
        check_eval_labels(self.labels, self.val_fraction)


class _Centre:
    """The draws of a centred crop (or padding) in place of random ones."""

    @staticmethod
    def randint(low: int, high: int) -> int:
        return (low + high) // 2


class CentreVolume(VolumeTransform):
    """The test view: resampling and normalisation as in training, the centre crop, no flips."""

    def __call__(self, volume: np.ndarray, spacing: Sequence[float], seed: int) -> torch.Tensor:
        x = crop_or_pad(self.prepare(volume, spacing), self.size, self.cfg.pad_value, _Centre())
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def labelled(cfg: VolumeEvalDataConfig) -> LabelledData:
    if cfg.root:
        files, labels, classes = labelled_files(Path(cfg.root).expanduser(), cfg.labels, None,
                                                "data.root", scan)
    else:
        from mim.modalities.volume.demo import demo_files

        _, files, labels, classes = demo_files()
    if not files:
        raise FileNotFoundError("data.labels: no labelled volumes found")
    train_files, train_labels, val_files, val_labels = split_files(
        files, labels, classes, cfg.val_root, cfg.labels, cfg.val_fraction, cfg.split_seed, scan)
    log.info("labelled volumes: %d training, %d held out, %d classes", len(train_files),
             len(val_files), len(classes))
    centre = CentreVolume(cfg)
    return LabelledData(
        train=VolumeDataset(train_files, train_labels, VolumeTransform(cfg), cfg.channels,
                            classes),
        train_plain=VolumeDataset(train_files, train_labels, centre, cfg.channels, classes),
        val=VolumeDataset(val_files, val_labels, centre, cfg.channels, classes), classes=classes)


def inputs(cfg: VolumeEvalDataConfig, path: Path) -> VolumeDataset:
    """A volume file, or every volume under a folder, in the centre-crop test view."""
    files = [path] if path.is_file() else scan(path)
    return VolumeDataset(files, [-1] * len(files), CentreVolume(cfg), cfg.channels)
