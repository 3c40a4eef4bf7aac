"""``data`` settings of the volume modality: 3D arrays (.npy / .npz / NIfTI), one crop per item.

The pipeline (``transforms.py``) is: resample to ``target_spacing`` (optional, trilinear) ->
intensity normalisation over the whole volume -> random crop of ``input_size`` (padded with
``pad_value`` where the volume is smaller) -> random flips per axis. Axes are (D, H, W); for NIfTI
files D is the inferior-superior axis (the image is reoriented to RAS first, see dataset.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from mim.data.shards import check_format

INTENSITY_MODES = ("percentile", "window", "none")
DEMOS = ("phantoms", "segment")


@dataclass
class VolumeDataConfig:
    root: Optional[str] = None  # a folder searched recursively; None: built-in demo phantoms
    # folder: data.root is a folder of volume files; wds: WebDataset tar shards (KEY.npy ...),
    # data.root a folder of .tar, a list file, a quoted brace pattern or an fsspec URL
    format: str = "folder"
    # the built-in set read without data.root: "phantoms" (24 classification phantoms of three
    # kinds) or "segment" (the 32 images of mim eval segment's labelled phantoms, labels unused);
    # modalities/volume/demo.py
    demo: str = "phantoms"
    input_size: list[int] = field(default_factory=lambda: [96, 96, 96])  # crop (D, H, W)
    channels: int = 1  # arrays are [D, H, W] (one channel) or channel-first [C, D, H, W]
    # percentile: clip to the [p_low, p_high] percentiles of the volume, then z-score;
    # window: clip to [window_min, window_max] (e.g. CT Hounsfield units), then scale to [0, 1];
    # none: values as stored. Statistics are per volume and per channel.
    intensity: str = "percentile"
    p_low: float = 0.5  # lower clipping percentile (intensity=percentile)
    p_high: float = 99.5  # upper clipping percentile (intensity=percentile)
    window_min: Optional[float] = None  # lower end of the window (intensity=window)
    window_max: Optional[float] = None  # upper end of the window (intensity=window)
    # z-score after clipping (mean 0, std 1 per volume and channel); None: the mode's default
    # (percentile: true, window and none: false). percentile with false scales to [0, 1].
    zscore: Optional[bool] = None
    # resample to this voxel size (D, H, W), trilinear, from the file's spacing (NIfTI zooms,
    # the 'spacing' array of an .npz; 1.0 where unknown); None: keep the voxel grid
    target_spacing: Optional[list[float]] = None
    flip: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # P(flip) per axis
    # value of padded voxels, in the normalised domain; None: the volume's minimum (background)
    pad_value: Optional[float] = None
    # a volume smaller than this (D, H, W, after resampling) is skipped like an unreadable
    # file; None: every volume smaller than the crop is padded (and counted in a warning)
    min_size: Optional[list[int]] = None
    # none | folders | path to a CSV of "relative/path,label"; demo: type; shards
    # (data.format=wds): the shards' KEY.cls / KEY.json, numbers or class names
    labels: str = "none"

    def __post_init__(self) -> None:
        check_format(self.format, self.root, self.labels)
        if self.demo not in DEMOS:
            raise ValueError(f"data.demo: '{self.demo}' is not one of: {', '.join(DEMOS)}")
        self.input_size = [int(s) for s in self.input_size]
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise ValueError(f"data.input_size: three sizes >= 1 (D, H, W) expected, got "
                             f"{self.input_size}")
        if self.channels < 1:
            raise ValueError(f"data.channels: must be >= 1, got {self.channels}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"data.intensity: '{self.intensity}' is not one of: "
                             f"{', '.join(INTENSITY_MODES)}")
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ValueError("data.p_low / data.p_high: need 0 <= p_low < p_high <= 100, got "
                             f"{self.p_low}, {self.p_high}")
        if self.intensity == "window":
            if self.window_min is None or self.window_max is None:
                raise ValueError("data.window_min / data.window_max: both are required with "
                                 "data.intensity=window")
            if not self.window_min < self.window_max:
                raise ValueError("data.window_min / data.window_max: need window_min < "
                                 f"window_max, got {self.window_min}, {self.window_max}")
        if self.target_spacing is not None:
            spacing = [float(s) for s in self.target_spacing]
            if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError("data.target_spacing: three finite values > 0 (D, H, W) or "
                                 f"null expected, got {self.target_spacing}")
            self.target_spacing = spacing
        if len(self.flip) != 3 or not all(0 <= p <= 1 for p in self.flip):
            raise ValueError(f"data.flip: three probabilities in [0, 1] (D, H, W) expected, "
                             f"got {self.flip}")
        if self.min_size is not None:
            self.min_size = [int(s) for s in self.min_size]
            if len(self.min_size) != 3 or min(self.min_size) < 1:
                raise ValueError(f"data.min_size: three sizes >= 1 (D, H, W) or null expected, "
                                 f"got {self.min_size}")
        if self.pad_value is not None and not math.isfinite(self.pad_value):
            raise ValueError(f"data.pad_value: must be finite or null, got {self.pad_value}")

    @property
    def use_zscore(self) -> bool:
        return self.intensity == "percentile" if self.zscore is None else self.zscore
