"""``data`` settings of the video modality (VideoMAE / MAE-ST pretraining sampling by default).

A clip is ``num_frames`` frames taken every ``sampling_rate`` frames (VideoMAE: 16 x 4) from a
random place in the video. Spatially, the short side is scaled to a random size in
``[min_scale, max_scale] x input_size`` (1.14 - 1.43: 256 - 320 px for 224, the Kinetics
short-side jitter of SlowFast / pytorchvideo) and a random ``input_size`` square is cropped,
then flipped with probability ``hflip``. ``repeat`` > 1 is MAE-ST's repeated sampling: K clips
(own window, own crop) from one decoding of the video.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mim.data.shards import check_format

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DECODERS = ("decord", "pyav")
READERS = ("native", "pytorchvideo")


@dataclass
class VideoDataConfig:
    root: Optional[str] = None  # a folder of videos, searched recursively; None: demo clips
    list_file: Optional[str] = None  # lines "path [label] [start_sec end_sec]"; wins over root
    # folder: data.root / data.list_file name video files; wds: WebDataset tar shards
    # (KEY.mp4 ...), data.root a folder of .tar, a list of shards, a quoted brace pattern or an
    # fsspec URL; each member is decoded from a temporary copy (decoders take a file name)
    format: str = "folder"
    decoder: str = "decord"  # decord | pyav (GIFs, and everything where decord is missing: PyAV)
    reader: str = "native"  # native (fast, seed-exact) | pytorchvideo (EncodedVideo, slower)
    num_frames: int = 16  # frames per clip
    sampling_rate: int = 4  # take every n-th frame
    input_size: int = 224  # side of the square crop, in pixels
    min_scale: float = 1.14  # short side scaled to [min, max] x input_size, then cropped
    max_scale: float = 1.43  # upper end of the short-side scale range
    hflip: float = 0.5  # probability of a horizontal flip
    repeat: int = 1  # K clips per decoded video (repeated sampling, MAE-ST)
    # videos shorter than a clip: true repeats frames to fill it (as VideoMAE and pytorchvideo
    # do; counted as padded in metrics.jsonl), false skips them
    pad_short: bool = True
    # per-channel normalisation mean (ImageNet's)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    # per-channel normalisation std (ImageNet's)
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        check_format(self.format, self.root, "none")
        if self.decoder not in DECODERS:
            raise ValueError(f"data.decoder: '{self.decoder}' is not one of: "
                             f"{', '.join(DECODERS)}")
        if self.reader not in READERS:
            raise ValueError(f"data.reader: '{self.reader}' is not one of: "
                             f"{', '.join(READERS)}")
        for key in ("num_frames", "sampling_rate", "input_size", "repeat"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}: must be >= 1, got {getattr(self, key)}")
        if not 1.0 <= self.min_scale <= self.max_scale:
            raise ValueError("data.min_scale / data.max_scale: the short side is scaled to "
                             "[min, max] x input_size before cropping, so 1 <= min <= max is "
                             f"needed, got {self.min_scale}, {self.max_scale}")
        if self.max_scale > 8:
            raise ValueError(f"data.max_scale: at most 8, got {self.max_scale}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"data.hflip: must be in [0, 1], got {self.hflip}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("data.mean / data.std: three values each, std > 0")

    @property
    def span(self) -> int:
        """Frames of the source video one clip covers, first to last."""
        return (self.num_frames - 1) * self.sampling_rate + 1
