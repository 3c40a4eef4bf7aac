"""Labelled sounds for ``mim eval``: list files, class folders or a CSV, or the demo's kinds.

Training items: ``data.list_file`` (``path label [start end]`` lines) or ``data.root`` with one
folder per class (or ``data.labels=<csv>``); held out: ``data.val_list_file`` /
``data.val_root``, or ``data.val_fraction`` of every class (seeded by ``data.split_seed``).
Without either, the demo's training and held-out splits, labelled by kind (``demo.py``).

Views: training clips at a random offset with ``data.gain_db``; fine-tuning adds AudioMAE's
SpecAugment (``data.freqm`` mel bins and ``data.timem`` frames masked, each one band of random
width up to that, set to 0, the normalised data's mean); the test view is the window at the
middle of each file (the whole file when it is shorter), no augmentation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mim.data.labelled import check_val_fraction, labelled_files, split_items
from mim.data.listfile import ListedItem, read_list
from mim.modalities.audio import demo
from mim.modalities.audio.config import AudioDataConfig
from mim.modalities.audio.dataset import AudioDataset, scan
from mim.spec import LabelledData

log = logging.getLogger("mim.data")
MIDDLE = 0.5  # the test view's window: centred in its file


@dataclass
class AudioEvalDataConfig(AudioDataConfig):
    labels: str = "folders"  # folders | path to a CSV of "relative/path,label" (data.root)
    val_list_file: Optional[str] = None  # held-out list; None: data.val_root or a split
    val_root: Optional[str] = None  # held-out class folders
    # held-out fraction of the data when there is no val_root / val_list_file
    val_fraction: float = 0.25
    split_seed: int = 0  # seed of that split
    # fine-tuning's SpecAugment: up to this many mel bins, and up to this many frames, masked
    # in one band each per clip; 0 disables; None: AudioMAE's AudioSet values (48 of 128 bins,
    # 192 of 1024 frames) in proportion to the clip's
    freqm: Optional[int] = None
    timem: Optional[int] = None  # as data.freqm, in frames (None: 192 of 1024 in proportion)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_val_fraction(self.val_fraction)
        if self.labels == "none":
            raise ValueError("data.labels: evaluation needs labels: folders or a CSV path")
        if not 0 <= self.freq_mask <= self.num_mel_bins or not 0 <= self.time_mask <= \
                self.num_frames:
            raise ValueError(f"data.freqm / data.timem: 0..{self.num_mel_bins} bins and "
                             f"0..{self.num_frames} frames, got {self.freqm}, {self.timem}")

    @property
    def freq_mask(self) -> int:
        """The widest SpecAugment band in mel bins (``freqm``, or AudioMAE's share)."""
        return self.num_mel_bins * 48 // 128 if self.freqm is None else self.freqm

    @property
    def time_mask(self) -> int:
        """The widest SpecAugment band in frames (``timem``, or AudioMAE's share)."""
        return self.num_frames * 192 // 1024 if self.timem is None else self.timem


class SpecAugmented(AudioDataset):
    """Training clips with one frequency band and one time band masked (SpecAugment)."""

    def load_padded(self, index: int, seed: int) -> tuple[torch.Tensor, int, str | None]:
        x, label, how = super().load_padded(index, seed)  # x [C, frames, mel]
        rng = np.random.default_rng((seed, 1))  # the clip's own draws stay as they were
        x = x.clone()
        for axis, most in ((2, self.cfg.freq_mask), (1, self.cfg.time_mask)):
            width = int(rng.integers(0, most + 1))
            start = int(rng.integers(0, x.shape[axis] - width + 1))
            x.narrow(axis, start, width).zero_()
        return x, label, how


def _folder_items(root: Path, how: str, classes: list[str] | None, key: str
                  ) -> tuple[list[ListedItem], list[str]]:
    files, labels, names = labelled_files(root, how, classes, key, scan)
    return [ListedItem(p, label) for p, label in zip(files, labels)], names


def _demo() -> tuple[list[ListedItem], list[ListedItem], list[str]]:
    train, val = (demo.split_files(split) for split in ("train", "val"))
    return ([ListedItem(f, label) for f, label in zip(*train)],
            [ListedItem(f, label) for f, label in zip(*val)], list(demo.KINDS))


def _items(cfg: AudioEvalDataConfig) -> tuple[list[ListedItem], list | None, list[str]]:
    """(training items, held-out items or None for a split, classes)."""
    if not (cfg.list_file or cfg.root):
        return _demo()
    if cfg.list_file:
        items, classes = read_list(Path(cfg.list_file).expanduser(), what="sound files")
    else:
        items, classes = _folder_items(Path(cfg.root).expanduser(), cfg.labels, None,
                                       "data.root")
    val = None
    if cfg.val_list_file:
        val, _ = read_list(Path(cfg.val_list_file).expanduser(), what="sound files",
                           classes=classes or None)
    elif cfg.val_root:
        val, _ = _folder_items(Path(cfg.val_root).expanduser(), cfg.labels, classes,
                               "data.val_root")
    return items, val, classes


def labelled(cfg: AudioEvalDataConfig) -> LabelledData:
    items, val, classes = _items(cfg)
    items = [i for i in items if i.label >= 0]
    if not items:
        raise FileNotFoundError("data: no labelled sound files (list lines need a label)")
    items, val = split_items(items, [i.label for i in items], val, cfg.val_fraction,
                             cfg.split_seed)
    classes = classes or [str(n) for n in range(max(i.label for i in items) + 1)]
    val = [i for i in val if i.label >= 0]
    log.info("labelled sounds: %d training, %d held out, %d classes", len(items), len(val),
             len(classes))
    return LabelledData(
        train=AudioDataset(items, cfg, classes),
        train_strong=SpecAugmented(items, cfg, classes),
        train_plain=AudioDataset(items, cfg, classes, position=MIDDLE, gain=False),
        val=AudioDataset(val, cfg, classes, position=MIDDLE, gain=False), classes=classes)


def inputs(cfg: AudioEvalDataConfig, path: Path) -> AudioDataset:
    """A sound file, or every sound file under a folder, in the test view."""
    files = [path] if path.is_file() else scan(path)
    return AudioDataset([ListedItem(p) for p in files], cfg, [], position=MIDDLE, gain=False)
