"""Video items from a folder, a list file or the built-in demo; broken files skipped.

A folder is searched recursively for video extensions (labels -1). A list file has one item a
line, ``path [label] [start_sec end_sec]`` (paths relative to the list file's folder; quote a
path with spaces; ``#`` starts a comment); labels may be integers or class names. Files that
cannot be used (zero bytes, not a video, audio only, truncated, corrupt, too short) raise
``UnreadableSample``; the core's ``MimDataset`` replaces them and reports path and reason.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from mim.data import MimDataset, UnreadableSample
from mim.data import listfile
from mim.data.files import find_files
from mim.data.shards import Member, Shards, shard_members
from mim.modalities.video import demo
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.decode import PAST_END, open_video, resolve_decoder
from mim.modalities.video.pvreader import PyTorchVideoReader
from mim.modalities.video.transforms import ClipSampler, ClipTransform, padding

log = logging.getLogger("mim.data")

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".gif", ".mpg", ".mpeg", ".wmv", ".flv",
    ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".asf", ".vob", ".mxf", ".y4m"})


@dataclass(frozen=True)
class VideoItem:
    path: Path | Member  # a shard member is decoded from a temporary copy
    label: int = -1
    start: Optional[float] = None  # seconds; None: the whole video
    end: Optional[float] = None


class VideoDataset(MimDataset):
    def __init__(self, items: list[VideoItem], cfg: VideoDataConfig,
                 classes: list[str] | None = None, transform: ClipTransform | None = None,
                 shards: Shards | None = None):
        """``transform``: a clip's augmentation (default: the pretraining crop and flip);
        ``shards``: the shards the items are members of (data.format=wds)."""
        self.items, self.cfg, self.classes = items, cfg, classes or []
        self.shards = shards
        self.sampler = ClipSampler(cfg, transform)
        self.pytorchvideo = PyTorchVideoReader(cfg) if cfg.reader == "pytorchvideo" else None

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> dict:
        return super().identity() if self.shards is None else self.shards.identity(len(self))

    def describe(self, index: int) -> str:
        item = self.items[index]
        if item.start is None:
            return str(item.path)
        return f"{item.path} [{item.start:g}-{item.end:g} s]"

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        """One clip [3, T, S, S] (or K views [K, 3, T, S, S]) and the item's label."""
        return self.load_padded(index, seed)[:2]

    def load_padded(self, index: int, seed: int) -> tuple[torch.Tensor, int, str | None]:
        """``load`` and how a video shorter than a clip was padded (None: it was not)."""
        item = self.items[index]
        with item.path.local() if isinstance(item.path, Member) else nullcontext(item.path) as p:
            return self._read(item, p, seed)

    def _read(self, item: VideoItem, path: Path, seed: int
              ) -> tuple[torch.Tensor, int, str | None]:
        if self.pytorchvideo is not None:
            x, padded = self.pytorchvideo.read(path, seed, item.start, item.end)
            return x, item.label, padded
        with open_video(path, self.cfg.decoder) as video:
            first, end = 0, video.num_frames
            if item.start is not None:
                duration = video.num_frames / video.fps
                if item.start >= duration:
                    raise UnreadableSample(f"start {item.start:g} s is past the end of the "
                                           f"video ({duration:.2f} s)", PAST_END)
                first = math.floor(item.start * video.fps + 1e-6)
                end = min(end, math.ceil(item.end * video.fps - 1e-6))
            x = self.sampler(video, seed, first, end)
        return x, item.label, padding(end - first, self.cfg.num_frames, self.cfg.sampling_rate)


def is_video_file(name: str) -> bool:
    """A name with a video suffix (the rule of a folder, of shards and of ``mim data pack``)."""
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def scan(root: Path) -> list[Path]:
    return find_files(root, is_video_file,
                      f"video files (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")


def read_list(list_file: Path, classes: list[str] | None = None
              ) -> tuple[list[VideoItem], list[str]]:
    """Parse ``path [label] [start_sec end_sec]`` lines (``mim/data/listfile.py``) -> items and
    class names (``classes``: a held-out list's names mapped onto those)."""
    listed, classes = listfile.read_list(list_file, what="videos", classes=classes)
    return [VideoItem(i.path, i.label, i.start, i.end) for i in listed], classes


def build_dataset(cfg: VideoDataConfig) -> VideoDataset:
    shards = None
    if cfg.format == "wds":  # labels stay in the shards: pretraining reads none
        members, shards = shard_members(str(cfg.root), is_video_file, "video")
        items, classes = [VideoItem(m) for m in members], []
        source = f"the shards of {cfg.root}" + (f" ({shards.damaged} damaged)"
                                                if shards.damaged else "")
    elif cfg.list_file:
        items, classes = read_list(Path(cfg.list_file).expanduser())
        source = cfg.list_file
    elif cfg.root:
        root = Path(cfg.root).expanduser()
        items, classes = [VideoItem(p) for p in scan(root)], []
        source = str(root)
    else:
        files = demo.demo_files(cfg.span)  # the GIF only where it holds a whole clip
        items = [VideoItem(path, label) for path, label in files]
        classes, source = list(demo.CLASSES), f"{demo.cache_dir()} (built-in demo videos)"
    cfg = dataclasses.replace(cfg, decoder=resolve_decoder(cfg.decoder))
    log.info("video data: %d items from %s, decoder %s, reader %s", len(items), source,
             cfg.decoder, cfg.reader)
    return VideoDataset(items, cfg, classes, shards=shards)
