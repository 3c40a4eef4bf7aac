"""What every decoder shares: the ``Video`` contract, why a file cannot be read (the kinds of
``UnreadableSample``), the threads a decoder may use and the size it may decode at."""
from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from torch.utils.data import get_worker_info

from mim.data import UnreadableSample, files

EMPTY, MISSING = files.EMPTY, files.MISSING
NOT_VIDEO = "not a video (cannot be opened)"
DAMAGED = "truncated or corrupt (frames fail to decode)"
PAST_END = "start past the end of the video (data.list_file)"

# (full upright height, width) -> the least resolution (decoded pixels per pixel of the file)
# the clip's views need; the decoders scale the frames while converting them to RGB
Resolution = Optional[Callable[[int, int], float]]


class Video(ABC):
    """An open video: ``num_frames``, ``fps`` and ``read(indices) -> uint8 [N, H, W, 3]``;
    after a read, ``frame_size``: the upright (height, width) of the file's frames, which the
    frames read are smaller than when ``resolution`` allowed it."""

    num_frames: int
    fps: float
    frame_size: tuple[int, int] = (0, 0)

    @abstractmethod
    def read(self, indices: list[int], resolution: Resolution = None) -> np.ndarray:
        """Frames at ``indices`` (in order) -> uint8 [N, H, W, 3], at
        ``resolution(*frame_size)`` of the full size (rounded) where given and below 1."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reduced(width: int, height: int, scale: float) -> tuple[int, int]:
    """The (width, height) a ``width`` x ``height`` frame is decoded at for ``scale``."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def decoder_threads() -> int:
    """Threads for one open video: the cores this process may use, shared by the loader's
    workers. Every worker decodes a video of its own at the same time, so threads beyond
    cores / workers only take turns on the same cores (and each of FFmpeg's frame threads holds
    frames); with as many workers as cores, one thread each decodes the most clips per second.
    In the main process one: it decodes the pictures' fixed clips and then forks the loader's
    workers, and a worker forked from a process that had decoded with FFmpeg's frame threads
    has hung at start-up here (``bench/RESULTS.md``, figure 5); ``train.num_workers=0`` is for
    debugging, where the speed of decoding matters less than never hanging."""
    info = get_worker_info()
    if info is None:
        return 1
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, cores // info.num_workers)


def check_file(path: Path) -> None:
    files.check_file(path, NOT_VIDEO)


def kind_of(exc: UnreadableSample, kind: str) -> UnreadableSample:
    """``exc`` with ``kind`` unless it already says its kind."""
    exc.kind = exc.kind or kind
    return exc


def short(exc: BaseException) -> str:
    """One line of an exception: decord's '[time] file.cc:line:' prefixes and PyAV's errno
    and file name removed."""
    strerror = getattr(exc, "strerror", None)  # av.error.FFmpegError is an OSError
    text = " ".join((strerror or str(exc)).split()) or type(exc).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+\.cc:\d+: ", "", text)
    return text[:200]
