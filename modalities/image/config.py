"""``data`` settings of the image modality (MAE's pretraining augmentation by default)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from mim.data.shards import check_format

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DEMOS = ("photos", "lfw", "raster", "segment")


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
    # without a root: "photos" (scikit-image's photographs), "lfw" (the training part of the
    # labelled LFW face / non-face set that ``mim eval`` holds out from, see labelled.py) or
    # "raster" (procedural 13-band Sentinel-2-like scenes, uint16, some nodata: raster_demo.py)
    # or "segment" (the training scenes of mim eval segment's textured shapes: segment_demo.py)
    demo: str = "photos"
    # how files are read: photo (RGB pictures, 8 bits: grayscale, palette and CMYK become RGB,
    # as ImageNet pipelines do), raster (every band at its own bit depth: TIFF, GeoTIFF,
    # .npy/.npz, 16-bit PNG; modalities/image/raster.py), or auto: photo for a folder of JPEG,
    # WebP and 8-bit PNG files without data.bands, raster otherwise (the log says which)
    reader: str = "auto"
    # the bands a sample holds, in order, by index or by name (the file's band descriptions, or
    # data.band_names); []: every band of the files (photos: R, G, B)
    bands: list[Any] = field(default_factory=list)
    # names of the files' bands, in file order, where the files name none ([]: the files',
    # else band0, band1, ...); a run records them, and model.init maps bands by them
    band_names: list[str] = field(default_factory=list)
    # centre wavelength of each of the files' bands in µm ([]: the files' where they say)
    wavelengths: list[float] = field(default_factory=list)
    layout: str = "chw"  # .npy / .npz arrays: chw ([C, H, W]) or hwc ([H, W, C])
    # the dtype every file must have (uint8, uint16, int16, float32, ...); auto: the first
    # file's; a file of another dtype is skipped and counted, never cast
    dtype: str = "auto"
    # a constant divisor of the file's values before normalisation (10000: Sentinel-2
    # reflectance); null: 255 for photos, 1 for rasters
    scale: Optional[float] = None
    # per-band normalisation mean, in the file's units divided by data.scale, one per band of
    # the sample (or one per band of the files: those of data.bands are taken); auto: computed
    # once over data.stats_files files of the data (derived.json: band_mean); null: ImageNet's
    # for photos, auto for rasters
    mean: Any = None
    std: Any = None  # per-band normalisation std, as data.mean (null: ImageNet's / auto)
    # the value that marks no data (a number, or nan); null: what the files declare (GeoTIFF
    # nodata), else none. Such pixels are excluded from the loss, patches mostly of them masked
    # and never scored, and a file of nothing else skipped
    nodata: Any = None
    # [low, high]: the values a valid pixel may take; a file with others is skipped and counted
    valid_range: list[float] = field(default_factory=list)
    stats_files: int = 256  # files read for data.mean / data.std = auto (evenly spaced)
    # give each raster sample its dates and place (for model.coords, Prithvi-EO-2.0's TL): the
    # dates from the file names (data.date_pattern), latitude and longitude from the GeoTIFF's
    # georeference (rasterio); unknown ones are NaN, and the model then adds nothing for them
    coords: bool = False
    # a CSV of each file's date and place where names and georeferences do not say them: a
    # header naming path (relative to data.root) and any of date, lat, lon; empty cells unknown
    coords_file: Optional[str] = None
    # the three bands a raster's false-colour picture shows, by index or name, as red, green,
    # blue (e.g. [B08,B04,B03]); []: the red, green and blue bands where names say, else the
    # first three
    composite: list[Any] = field(default_factory=list)
    # T > 1: a sample is a time stack [C, T, H, W] of T co-registered rasters of one place, a
    # folder per sample holding one file per date (Prithvi-EO's input; train it with
    # model.tokenizer=cube and model.tubelet_size, 1 for Prithvi); 1: single rasters
    time_steps: int = 1
    # how a time stack is stored: folder (a folder per sample, a file per date) or file (a file
    # per sample holding T x C bands, date-major: a multi-page TIFF's pages, or [T*C, H, W])
    stack: str = "folder"
    # where a file's name gives its date, which orders a stack: a regular expression whose
    # first group is the date, as YYYYMMDD, YYYY-MM-DD or YYYYDDD (day of the year, HLS's)
    date_pattern: str = r"(?<!\d)(\d{4}-\d{2}-\d{2}|\d{8}|\d{7})(?!\d)"
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
        if self.demo not in DEMOS:
            raise ValueError(f"data.demo: '{self.demo}' is not one of: {', '.join(DEMOS)}")
        if not all(type(size) is int for size in self.resolution_schedule):
            raise ValueError(f"data.resolution_schedule: one integer size per stage (the side "
                             f"of the square crop, e.g. [160,192,224]), got "
                             f"{list(self.resolution_schedule)}")
        if self.resolution_schedule and (self.resolution_schedule[-1] != self.input_size or
                                         min(self.resolution_schedule) < 1):
            raise ValueError(f"data.resolution_schedule: sizes >= 1 ending at data.input_size="
                             f"{self.input_size} (pictures and evaluation use it), got "
                             f"{list(self.resolution_schedule)}")
        check_raster_settings(self)


READERS = ("auto", "photo", "raster")
LAYOUTS = ("chw", "hwc")
STACKS = ("folder", "file")


def _check_stats(cfg: ImageDataConfig) -> None:
    for key in ("mean", "std"):
        value = getattr(cfg, key)
        if value is None or value == "auto":
            continue
        if not isinstance(value, list) or not value or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"data.{key}: one number per band, auto or null, got {value!r}")
    if isinstance(cfg.std, list) and min(cfg.std) <= 0:
        raise ValueError(f"data.std: every value must be > 0, got {cfg.std}")


def nodata_value(value: Any) -> Optional[float]:
    """``data.nodata`` as a float (NaN for nan), or None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"data.nodata: a number, nan or null, got {value!r}") from None


def check_raster_settings(cfg: ImageDataConfig) -> None:
    """The raster keys' own checks (those against the files come in ``bands.resolve``)."""
    if cfg.reader not in READERS:
        raise ValueError(f"data.reader: '{cfg.reader}' is not one of: {', '.join(READERS)}")
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"data.layout: '{cfg.layout}' is not one of: {', '.join(LAYOUTS)}")
    _check_stats(cfg)
    nodata_value(cfg.nodata)
    if cfg.scale is not None and not (cfg.scale > 0 and math.isfinite(cfg.scale)):
        raise ValueError(f"data.scale: a positive divisor, got {cfg.scale}")
    if cfg.valid_range and (len(cfg.valid_range) != 2 or
                            cfg.valid_range[0] > cfg.valid_range[1]):
        raise ValueError(f"data.valid_range: [low, high], got {list(cfg.valid_range)}")
    if cfg.stack not in STACKS:
        raise ValueError(f"data.stack: '{cfg.stack}' is not one of: {', '.join(STACKS)}")
    if cfg.time_steps < 1:
        raise ValueError(f"data.time_steps: must be >= 1, got {cfg.time_steps}")
    if cfg.time_steps > 1 and cfg.format != "folder":
        raise ValueError("data.time_steps: time stacks are read from folders (a folder per "
                         "sample, a file per date); data.format=wds holds single rasters")
    try:
        if re.compile(cfg.date_pattern).groups < 1:
            raise ValueError(f"data.date_pattern: needs a group, the date, in {cfg.date_pattern}")
    except re.error as exc:
        raise ValueError(f"data.date_pattern: not a regular expression ({exc})") from None
    if cfg.stats_files < 1:
        raise ValueError(f"data.stats_files: must be >= 1, got {cfg.stats_files}")
    if cfg.composite and len(cfg.composite) != 3:
        raise ValueError(f"data.composite: three bands (red, green, blue), got "
                         f"{list(cfg.composite)}")
    for band in cfg.bands:
        if isinstance(band, bool) or not isinstance(band, (int, str)):
            raise ValueError(f"data.bands: band indices or names, got {list(cfg.bands)}")


def photo_stats(cfg: ImageDataConfig) -> tuple[list[float], list[float]]:
    """A photo config's normalisation (mean, std) of its bands: as set, ImageNet's where null."""
    bands = list(cfg.bands) or [0, 1, 2]
    mean = [IMAGENET_MEAN[i] for i in bands] if cfg.mean is None else list(cfg.mean)
    std = [IMAGENET_STD[i] for i in bands] if cfg.std is None else list(cfg.std)
    return mean, std
