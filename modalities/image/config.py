"""``data`` settings of the image modality (MAE's pretraining augmentation by default)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mim.data.shards import check_format

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ImageDataConfig:
    root: Optional[str] = None  # a folder, searched recursively; None: built-in demo photos
    # folder: data.root is a folder of image files; wds: WebDataset tar shards (KEY.jpg, KEY.cls),
    # data.root a folder of .tar, a list file, a brace pattern (train-{000..127}.tar, quoted)
    # or any fsspec URL of those (`mim data pack` writes them)
    format: str = "folder"
    input_size: int = 224  # side of the square crop, in pixels
    min_scale: float = 0.2  # RandomResizedCrop scale range (MAE: 0.2 - 1.0)
    max_scale: float = 1.0  # upper end of the crop scale range
    hflip: float = 0.5  # probability of a horizontal flip
    # none | folders | path to a CSV of "relative/path,label"; shards (data.format=wds): the
    # shards' KEY.cls / KEY.json, numbers or class names (none: no label is read)
    labels: str = "none"
    # without a root: "photos" (scikit-image's photographs) or "lfw" (the training part of the
    # labelled LFW face / non-face set that ``mim eval`` holds out from, see labelled.py)
    demo: str = "photos"
    # per-channel normalisation mean (ImageNet's)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    # per-channel normalisation std (ImageNet's)
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # progressive resolution (DailyMAE): input sizes in stages of equal length over the run,
    # e.g. [160,192,224]; a repeated size lengthens its stage; the last is data.input_size
    # (pictures and evaluation use it); each a multiple of the patch size; []: input_size only
    resolution_schedule: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ValueError(f"data.input_size: must be >= 1, got {self.input_size}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError("data.min_scale / data.max_scale: need 0 < min <= max <= 1, got "
                             f"{self.min_scale}, {self.max_scale}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"data.hflip: must be in [0, 1], got {self.hflip}")
        check_format(self.format, self.root, self.labels)
        if self.demo not in ("photos", "lfw"):
            raise ValueError(f"data.demo: '{self.demo}' is not one of: photos, lfw")
        if not all(type(size) is int for size in self.resolution_schedule):
            raise ValueError(f"data.resolution_schedule: one integer size per stage (the side "
                             f"of the square crop, e.g. [160,192,224]), got "
                             f"{list(self.resolution_schedule)}")
        if self.resolution_schedule and (self.resolution_schedule[-1] != self.input_size or
                                         min(self.resolution_schedule) < 1):
            raise ValueError(f"data.resolution_schedule: sizes >= 1 ending at data.input_size="
                             f"{self.input_size} (pictures and evaluation use it), got "
                             f"{list(self.resolution_schedule)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("data.mean / data.std: three values each, std > 0")
