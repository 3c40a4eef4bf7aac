"""Labelled videos for ``mim eval``: list files, class folders, or a built-in motion demo set.

Training items: ``data.list_file`` (``path label [start end]`` lines) or ``data.root`` with one
folder per class; held out: ``data.val_list_file`` / ``data.val_root``, or ``data.val_fraction``
of every class (seeded by ``data.split_seed``). Training views are the pretraining clip sampler
(random window, short-side scale jitter, crop, flip); fine-tuning adds RandAugment and random
erasing (``data.randaug``, ``data.reprob``; ``augment.py``). Test views are VideoMAE's multi-view
protocol: ``test_clips`` windows evenly spaced in time x ``test_crops`` squares along the long
side of the frame scaled to ``input_size`` (short side); the evaluation averages over them.

The demo set is labelled by how each clip was made: the camera of ``demo.py`` pans, zooms or
orbits over scikit-image photographs (two variants each). Four photos train, two held-out
photos test, so a classifier must recognise the motion, not the picture. Clips are 32 frames
at 80x60, encoded once into ``$MIM_CACHE_DIR/demo_video/labelled_v1`` with list files.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mim.data import UnreadableSample
from mim.data.labelled import check_val_fraction, labelled_files, split_items
from mim.data.shards import check_eval_format
from mim.modalities.image.augment import check_finetune_augment
from mim.modalities.video import demo
from mim.modalities.video.augment import FinetuneClipTransform
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.dataset import VideoDataset, VideoItem, read_list, scan
from mim.modalities.video.decode import open_video, resolve_decoder
from mim.modalities.video.transforms import clip_indices
from mim.spec import LabelledData

log = logging.getLogger("mim.data")

VERSION = "labelled_v1"
TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
VAL_PHOTOS = ("camera", "immunohistochemistry")
VARIANTS = 2
SUBSAMPLE, SHRINK = 2, 2  # of demo.render's 64 frames at 160x120: every 2nd, half the size


@dataclass
class VideoEvalDataConfig(VideoDataConfig):
    val_list_file: Optional[str] = None  # held-out list; None: data.val_root or a split
    val_root: Optional[str] = None  # held-out class folders
    # held-out fraction of the data when there is no val_root / val_list_file
    val_fraction: float = 0.25
    split_seed: int = 0  # seed of that split
    test_clips: int = 2  # temporal test views, evenly spaced
    test_crops: int = 3  # spatial test views along the long side (VideoMAE: 3)
    # fine-tuning's training view adds these (VideoMAE's Kinetics recipe; augment.py): timm's
    # RandAugment spec, one draw per clip ('' disables), and per-frame random erasing
    randaug: str = "rand-m7-n4-mstd0.5-inc1"
    reprob: float = 0.25  # probability of random erasing per frame (fine-tuning)

    def __post_init__(self) -> None:
        check_eval_format(self.format)
        super().__post_init__()
        check_finetune_augment(self.randaug, self.reprob, self.input_size, self.mean)
        check_val_fraction(self.val_fraction)
        if self.test_clips < 1 or self.test_crops < 1:
            raise ValueError("data.test_clips / data.test_crops: must be >= 1")


def _write_list(path: Path, rows: list[tuple[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{name} {label}\n" for name, label in rows))
    tmp.replace(path)


def demo_lists() -> tuple[Path, Path]:
    """(train list, val list) of the motion demo set, encoding missing clips first."""
    folder = demo.cache_dir().parent / VERSION
    train, val = folder / "train.txt", folder / "val.txt"
    if train.is_file() and val.is_file():
        return train, val
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    for part, photos in (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)):
        for photo in photos:
            for motion in demo.MOTIONS:
                for variant in range(VARIANTS):
                    name = f"{motion}_{photo}_{variant}.mp4"
                    if not (folder / name).is_file():
                        frames = demo.render(photo, motion, variant)
                        size = (demo.WIDTH // SHRINK, demo.HEIGHT // SHRINK)
                        small = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))
                                 for f in frames[::SUBSAMPLE]]
                        demo.encode(small, folder / name)
                    rows[part].append((name, motion))
    _write_list(val, rows["val"])
    _write_list(train, rows["train"])  # written last: its presence means the set is complete
    log.info("demo videos: encoded the labelled motion set into %s", folder)
    return train, val


class TestViews(VideoDataset):
    """Deterministic multi-view clips: x [clips x crops, 3, T, S, S] (or [3, T, S, S] for one)."""

    def __init__(self, items: list[VideoItem], cfg: VideoEvalDataConfig, classes: list[str],
                 clips: int, crops: int):
        super().__init__(items, cfg, classes)
        self.clips, self.crops = clips, crops
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)  # [C, T, H, W] broadcast
        self.std = torch.tensor(cfg.std).view(3, 1, 1, 1)

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        item, cfg = self.items[index], self.cfg
        with open_video(item.path, cfg.decoder) as video:
            first, end = 0, video.num_frames
            if item.start is not None:
                first = math.floor(item.start * video.fps + 1e-6)
                end = min(end, math.ceil(item.end * video.fps - 1e-6))
            span = (cfg.num_frames - 1) * cfg.sampling_rate + 1
            starts = np.linspace(first, max(first, end - span), self.clips).round().astype(int)
            windows = [clip_indices(_Fixed(int(s)), int(s), end, cfg.num_frames,
                                    cfg.sampling_rate, cfg.pad_short) for s in starts]
            union = sorted({i for w in windows for i in w})
            frames = torch.as_tensor(video.read(union))  # [U, H, W, 3] uint8
        if frames.ndim != 4 or frames.shape[0] != len(union):
            raise UnreadableSample(f"decoder returned frames of shape {tuple(frames.shape)}")
        row = {i: r for r, i in enumerate(union)}
        views = [view for w in windows for view in self._crops(frames[[row[i] for i in w]])]
        x = torch.stack(views)  # [V, 3, T, S, S]
        return (x[0] if len(views) == 1 else x), item.label

    def _crops(self, frames: torch.Tensor) -> list[torch.Tensor]:
        size = self.cfg.input_size
        x = frames.permute(0, 3, 1, 2).float()  # [T, 3, H, W]
        height, width = x.shape[-2:]
        scale = size / min(height, width)
        new = (max(size, round(height * scale)), max(size, round(width * scale)))
        x = F.interpolate(x, size=new, mode="bilinear", align_corners=False,
                          antialias=scale < 1).div_(255.0)
        long_axis = -1 if new[1] >= new[0] else -2
        offsets = np.linspace(0, new[long_axis] - size, self.crops).round().astype(int)
        short = (new[0 if long_axis == -1 else 1] - size) // 2
        views = []
        for offset in offsets:
            top, left = (short, offset) if long_axis == -1 else (offset, short)
            crop = x[..., top:top + size, left:left + size].permute(1, 0, 2, 3)  # [3, T, S, S]
            views.append((crop - self.mean) / self.std)
        return views


class _Fixed:
    """A stand-in random source whose draws are the given start: a deterministic window."""

    def __init__(self, start: int):
        self.start = start

    def randint(self, low: int, high: int) -> int:
        return min(max(self.start, low), high)


def _folder_items(root: Path, classes: list[str] | None, key: str
                  ) -> tuple[list[VideoItem], list[str]]:
    """Class folders -> items; held-out folders (``classes`` given) map onto those classes."""
    files, labels, names = labelled_files(root, "folders", classes, key, scan)
    return [VideoItem(p, label) for p, label in zip(files, labels)], names


def labelled(cfg: VideoEvalDataConfig) -> LabelledData:
    cfg = dataclasses.replace(cfg, decoder=resolve_decoder(cfg.decoder))  # before the workers
    list_file, val_list = cfg.list_file, cfg.val_list_file
    if not (cfg.list_file or cfg.root):
        train_path, val_path = demo_lists()
        list_file, val_list = str(train_path), str(val_path)
    if list_file:
        items, classes = read_list(Path(list_file).expanduser())
    else:
        items, classes = _folder_items(Path(cfg.root).expanduser(), None, "data.root")
    items = [i for i in items if i.label >= 0]
    if not items:
        raise FileNotFoundError("data: no labelled videos (list lines need a label)")
    val = None  # a held-out list or folders, else a split of the training items
    if val_list:
        val, _ = read_list(Path(val_list).expanduser(), classes or None)
    elif cfg.val_root:
        val, _ = _folder_items(Path(cfg.val_root).expanduser(), classes, "data.val_root")
    items, val = split_items(items, [i.label for i in items], val, cfg.val_fraction,
                             cfg.split_seed)
    classes = classes or [str(n) for n in range(max(i.label for i in items) + 1)]
    val = [i for i in val if i.label >= 0]
    log.info("labelled videos: %d training, %d held out, %d classes; %d x %d test views",
             len(items), len(val), len(classes), cfg.test_clips, cfg.test_crops)
    strong = None  # pytorchvideo's reader has its own transforms: fine-tuning uses ``train``
    if cfg.reader != "pytorchvideo":
        strong = VideoDataset(items, cfg, classes, FinetuneClipTransform(cfg))
    return LabelledData(train=VideoDataset(items, cfg, classes), train_strong=strong,
                        train_plain=TestViews(items, cfg, classes, cfg.test_clips, cfg.test_crops),
                        val=TestViews(val, cfg, classes, cfg.test_clips, cfg.test_crops),
                        classes=classes)


def inputs(cfg: VideoEvalDataConfig, path: Path) -> TestViews:
    """A video file, or every video under a folder: the centre window and crop of each."""
    files = [path] if path.is_file() else scan(path)
    return TestViews([VideoItem(p) for p in files], cfg, [], clips=1, crops=1)
