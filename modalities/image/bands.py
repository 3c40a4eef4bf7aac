"""What a folder of images holds, decided once from its files: the reader, the bands, their
names and wavelengths, the dtype, nodata and the normalisation statistics.

``resolve(cfg, items)`` runs in validation (``ModalitySpec.resolve_data``), before any compute,
and its result is written back into the run's config, so ``config.yaml``, ``--cfg``, every
checkpoint and every export hold the bands by name, the statistics and nodata as the run used
them. ``BandReader`` then reads each file of the run to exactly those bands, and refuses (one
``UnreadableSample``, counted by kind) a file that does not have them: nothing is zero-filled,
cast or rescaled behind the user's back.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from einops import rearrange

from mim.data import UnreadableSample
from mim.data.stats import sample_indices
from mim.wording import plural
from mim.modalities.image.config import ImageDataConfig, nodata_value, photo_stats
from mim.modalities.image.raster import (
    Header, RasterError, Raster, default_names, band_index, is_array_file, is_tiff_file, read_raster)

log = logging.getLogger("mim.data")

PHOTO_NAMES = ["red", "green", "blue"]  # the bands of a photo, as decode.py gives them
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".webp", ".bmp", ".gif")
PROBE_FILES = 16  # files whose headers decide data.reader=auto


@dataclass(frozen=True)
class Items:
    """The files of a dataset as resolution reads them: ``count`` items, ``name(i)`` (a file
    name with its suffix) and ``open(i)`` (a path, or a shard member's bytes)."""

    count: int
    name: Callable[[int], str]
    open: Callable[[int], "Path | bytes"]


def folder_items(files: Sequence[Path]) -> Items:
    return Items(len(files), lambda i: files[i].name, lambda i: files[i])


# -- which reader ------------------------------------------------------------------------------
def _is_scientific(items: Items, index: int) -> bool:
    name = items.name(index)
    if is_tiff_file(name) or is_array_file(name):
        return True
    if name.lower().endswith(PHOTO_SUFFIXES):
        return False
    try:  # a PNG (or another PIL format): 16-bit and float pictures are data, not photos
        header = read_raster(items.open(index), name, pixels=False)
    except Exception:  # unreadable: the dataset skips and counts it
        return False
    return header.dtype not in ("uint8", "bool")


def choose_reader(cfg: ImageDataConfig, items: Items) -> str:
    """``data.reader``: as set, else raster with ``data.bands`` or where most of the first
    files are rasters (TIFF, arrays, 16-bit or float pictures), photo otherwise (a 16-bit
    file among photos is then skipped and named, never squeezed into 8 bits)."""
    if cfg.reader != "auto":
        return cfg.reader
    if cfg.bands or cfg.time_steps > 1:
        return "raster"
    probe = range(min(PROBE_FILES, items.count))
    rasters = sum(_is_scientific(items, i) for i in probe)
    return "raster" if 2 * rasters > len(probe) else "photo"


# -- the bands ---------------------------------------------------------------------------------
def _first_header(items: Items, layout: str):
    """The header of the first of the first files whose band count and dtype most of them
    share (one odd file first in the folder does not decide the run's bands)."""
    headers = []
    for index in range(min(PROBE_FILES, items.count)):
        try:
            headers.append(read_raster(items.open(index), items.name(index), layout,
                                       pixels=False))
        except Exception as exc:  # the dataset names it when it reads it
            log.debug("probe: %s unreadable (%s)", items.name(index), exc)
    if not headers:
        raise FileNotFoundError(f"data.root: none of the first {min(PROBE_FILES, items.count)} "
                                "files can be read as a raster")
    kinds = [(h.bands, h.dtype) for h in headers]
    common = max(kinds, key=kinds.count)
    return headers[kinds.index(common)]


def _names(cfg: ImageDataConfig, header) -> tuple[list[str], bool]:
    """The files' band names and whether the files gave them."""
    if cfg.band_names:
        if len(cfg.band_names) != header.bands:
            raise ValueError(f"data.band_names: {len(cfg.band_names)} names for files of "
                             f"{header.bands} bands")
        return list(cfg.band_names), False
    return (list(header.names), True) if header.names else (default_names(header.bands), False)


def _wavelengths(cfg: ImageDataConfig, header) -> list[float]:
    if cfg.wavelengths:
        if len(cfg.wavelengths) != header.bands:
            raise ValueError(f"data.wavelengths: {len(cfg.wavelengths)} values for files of "
                             f"{header.bands} bands (one per band of the files, in µm)")
        return list(cfg.wavelengths)
    return list(header.wavelengths)


def _per_date(cfg: ImageDataConfig, header: Header) -> Header:
    """A stack file's header as one date's: its T x C bands -> C (their names the first
    date's)."""
    dates = dates_in_file(cfg)
    if dates == 1:
        return header
    if header.bands % dates:
        raise ValueError(f"data.time_steps: the files have {header.bands} bands, not a "
                         f"multiple of {dates} dates (data.stack=file)")
    count = header.bands // dates
    return dataclasses.replace(header, bands=count, names=header.names[:count],
                               wavelengths=header.wavelengths[:count])


def _raster_bands(cfg: ImageDataConfig, items: Items) -> ImageDataConfig:
    header = _per_date(cfg, _first_header(items, cfg.layout))
    names, from_file = _names(cfg, header)
    bands = band_index(names, list(cfg.bands), header.bands, from_file) if cfg.bands \
        else list(range(header.bands))
    nodata = cfg.nodata
    if nodata is None and header.nodata is not None:
        nodata = "nan" if math.isnan(header.nodata) else header.nodata
        log.info("data.nodata: %s, as the files declare", nodata)
    dtype = header.dtype if cfg.dtype == "auto" else cfg.dtype
    log.info("image data: read as rasters, %d of the files' %s (%s), dtype %s%s",
             len(bands), plural(header.bands, "band"),
             ", ".join(names[i] for i in bands), dtype,
             "" if cfg.bands else " (every band of the files; data.bands chooses)")
    return dataclasses.replace(cfg, reader="raster", bands=bands, band_names=names,
                               wavelengths=_wavelengths(cfg, header), dtype=dtype,
                               nodata=nodata, scale=1.0 if cfg.scale is None else cfg.scale)


def _photo_bands(cfg: ImageDataConfig) -> ImageDataConfig:
    names = list(cfg.band_names or PHOTO_NAMES)
    bands = band_index(names, list(cfg.bands), 3, False) if cfg.bands else [0, 1, 2]
    if cfg.nodata is not None:
        raise ValueError("data.nodata: photos have no nodata value (data.reader=raster reads "
                         "the file's own values)")
    mean, std = photo_stats(dataclasses.replace(cfg, bands=bands))
    if "auto" in (cfg.mean, cfg.std):
        mean = "auto" if cfg.mean == "auto" else mean
        std = "auto" if cfg.std == "auto" else std
    return dataclasses.replace(cfg, reader="photo", bands=bands, band_names=names,
                               dtype="uint8", scale=255.0 if cfg.scale is None else cfg.scale,
                               mean=mean, std=std)


def run_band_names(cfg: ImageDataConfig) -> list[str]:
    """The names of a sample's bands, in order (a resolved config's)."""
    names = cfg.band_names or PHOTO_NAMES
    return [names[i] for i in (cfg.bands or range(len(names)))]


def band_count(cfg: ImageDataConfig) -> int:
    """C of a sample: the bands chosen (a config not yet resolved: a photo's three)."""
    return len(cfg.bands) if cfg.bands else 3


def sample_shape(cfg: ImageDataConfig, size: int) -> tuple[int, ...]:
    """(C, H, W) of a sample of crops of ``size``, (C, T, H, W) for time stacks."""
    dates = (cfg.time_steps,) if cfg.time_steps > 1 else ()
    return (band_count(cfg), *dates, size, size)


# -- reading one file to the run's bands -------------------------------------------------------
def dates_in_file(cfg: ImageDataConfig) -> int:
    """Dates one file holds: T for stacks stored a file each (``data.stack=file``), else 1."""
    return cfg.time_steps if cfg.time_steps > 1 and cfg.stack == "file" else 1


class BandReader:
    """A file -> float32 [C, H, W] of the run's bands divided by ``data.scale`` ([C, T, H, W]
    for a stack stored as one file), NaN where the file has no data; a file that cannot be one
    of the run's samples -> ``UnreadableSample``."""

    def __init__(self, cfg: ImageDataConfig):
        self.dates = dates_in_file(cfg)
        self.bands, self.count = list(cfg.bands), len(cfg.band_names) * self.dates
        self.dtype, self.layout, self.scale = cfg.dtype, cfg.layout, float(cfg.scale or 1.0)
        self.nodata = nodata_value(cfg.nodata)
        self.valid_range = tuple(cfg.valid_range) if cfg.valid_range else None

    def raw(self, source: "Path | bytes", name: str) -> np.ndarray:
        """The file's values of the run's bands [C, H, W], in its dtype, checked."""
        try:
            raster = read_raster(source, name, self.layout)
        except RasterError as exc:
            raise UnreadableSample(str(exc), exc.kind) from exc
        except Exception as exc:  # tifffile, rasterio, numpy and PIL raise many types
            raise UnreadableSample(f"{type(exc).__name__}: {exc}", "unreadable raster") from exc
        self._check(raster)
        values = raster.values  # [(T C), H, W]: dates outermost
        if self.dates > 1:
            values = rearrange(values, "(t c) h w -> c t h w", t=self.dates)
        if self.bands == list(range(self.count // self.dates)):
            return values  # every band, in order: no copy
        return values[self.bands]  # [C, (T,) H, W]

    def _check(self, raster: Raster) -> None:
        header = raster.header
        if header.bands != self.count:
            dates = f" ({self.dates} dates of {self.count // self.dates})" if self.dates > 1 \
                else ""
            raise UnreadableSample(
                f"{plural(header.bands, 'band')}, where the run's files have {self.count}"
                f"{dates}: never zero-filled", "other band count")
        if header.dtype != self.dtype:
            raise UnreadableSample(f"dtype {header.dtype}, where the run's files are "
                                   f"{self.dtype} (data.dtype): never cast", "other dtype")

    def __call__(self, source: "Path | bytes", name: str) -> np.ndarray:
        values = self.raw(source, name)
        x = values.astype(np.float32)  # [C, H, W]; uint16 and int16 are exact in float32
        nodata = self._nodata(values)  # [H, W] or None
        nan_is_nodata = self.nodata is not None and math.isnan(self.nodata)
        if values.dtype.kind == "f" and not nan_is_nodata and not np.isfinite(x).all():
            raise UnreadableSample("NaN or infinite values (data.nodata=nan treats NaN as no "
                                   "data)", "NaN values")
        if nodata is not None and nodata.any():
            if nodata.all():
                raise UnreadableSample("every pixel is nodata", "all nodata")
            x[:, nodata] = np.nan  # every band of a pixel one band marks
        self._check_range(x)
        if self.scale != 1.0:
            x /= self.scale
        return x

    def _nodata(self, values: np.ndarray) -> Optional[np.ndarray]:
        """bool [H, W]: a pixel of no data, where one band of it says so (None: no nodata)."""
        if self.nodata is None:
            return None
        if math.isnan(self.nodata):
            if values.dtype.kind != "f":
                return None  # integers hold no NaN
            return np.isnan(values).any(axis=0)
        return (values == self.nodata).any(axis=0)

    def _check_range(self, x: np.ndarray) -> None:
        if self.valid_range is None:
            return
        low, high = self.valid_range
        with np.errstate(invalid="ignore"):
            outside = (x < low) | (x > high)  # NaN (nodata) compares False
        if outside.any():
            raise UnreadableSample(f"values outside data.valid_range [{low}, {high}] "
                                   f"({np.nanmin(x):g} to {np.nanmax(x):g})", "out of range")


# -- statistics --------------------------------------------------------------------------------
@dataclass
class BandStats:
    names: list[str]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    nodata_fraction: list[float]
    files: int  # files the statistics read
    of: int  # files of the data
    skipped: list[tuple[str, str]]  # (file, why) of files in the sample that could not be read

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def band_statistics(read: Callable[[int], np.ndarray], items: Items, names: list[str],
                    files: int) -> BandStats:
    """Per-band mean, std (population), min and max over the valid pixels of ``files`` files
    spread over the data; ``read(i)``: float [C, H, W], NaN for no data."""
    total = np.zeros(len(names), np.float64)
    squares, counts, pixels = total.copy(), total.copy(), total.copy()
    low, high = np.full(len(names), np.inf), np.full(len(names), -np.inf)
    chosen, skipped = sample_indices(items.count, files), []
    for index in chosen:
        try:
            x = read(index).astype(np.float64)  # [C, H, W]
        except UnreadableSample as exc:
            skipped.append((items.name(index), str(exc)))
            continue
        valid = ~np.isnan(x)
        flat = np.where(valid, x, 0.0).reshape(len(names), -1)  # [C, H*W]
        total += flat.sum(1)
        squares += (flat ** 2).sum(1)
        counts += valid.reshape(len(names), -1).sum(1)
        pixels += x[0].size  # per band: H*W, or T*H*W
        spatial = tuple(range(1, x.ndim))  # (H, W), or (T, H, W) for a stack in one file
        low = np.minimum(low, np.nanmin(np.where(valid, x, np.inf), axis=spatial))
        high = np.maximum(high, np.nanmax(np.where(valid, x, -np.inf), axis=spatial))
    if not counts.all():
        raise FileNotFoundError(f"data.mean / data.std = auto: no valid pixel in "
                                f"{plural(len(chosen), 'file')} of the data")
    mean = total / counts
    std = np.sqrt(np.maximum(squares / counts - mean ** 2, 0.0))
    return BandStats(names, mean.tolist(), std.tolist(), low.tolist(), high.tolist(),
                     (1 - counts / pixels).tolist(), len(chosen) - len(skipped), items.count,
                     skipped)


def _auto_stats(cfg: ImageDataConfig, items: Items) -> ImageDataConfig:
    if cfg.mean not in (None, "auto") and cfg.std not in (None, "auto"):
        return cfg
    reader = BandReader(cfg)
    stats = band_statistics(lambda i: reader(items.open(i), items.name(i)), items,
                            run_band_names(cfg), cfg.stats_files)
    if stats.std and min(stats.std) <= 0:
        flat = run_band_names(cfg)[stats.std.index(min(stats.std))]
        raise ValueError(f"data.std = auto: band {flat} is constant over {stats.files} files; "
                         "set data.std")
    log.info("data.mean / data.std = auto: per-band statistics of %d of %s%s",
             stats.files, plural(stats.of, "file"),
             f" ({plural(len(stats.skipped), 'file')} unreadable, e.g. {stats.skipped[0][0]}: "
             f"{stats.skipped[0][1]})" if stats.skipped else "")
    return dataclasses.replace(cfg, mean=stats.mean if cfg.mean in (None, "auto") else cfg.mean,
                               std=stats.std if cfg.std in (None, "auto") else cfg.std)


def _chosen_stats(cfg: ImageDataConfig) -> ImageDataConfig:
    """Statistics given for every band of the files (e.g. a run's, inherited by an evaluation
    on some of its bands) taken for the chosen bands."""
    out = {}
    for key in ("mean", "std"):
        value = getattr(cfg, key)
        if (isinstance(value, list) and len(value) == len(cfg.band_names) != len(cfg.bands)):
            out[key] = [value[i] for i in cfg.bands]
    return dataclasses.replace(cfg, **out) if out else cfg


def _check_composite(cfg: ImageDataConfig) -> None:
    names = run_band_names(cfg)
    for band in cfg.composite:
        if (str(band) not in names) if isinstance(band, str) else not 0 <= band < len(names):
            raise ValueError(f"data.composite: {band!r} is not a band of the samples "
                             f"({', '.join(names)})")


def _check_lengths(cfg: ImageDataConfig) -> None:
    _check_composite(cfg)
    count = len(cfg.bands)
    for key in ("mean", "std"):
        if len(getattr(cfg, key)) != count:
            raise ValueError(f"data.{key}: {len(getattr(cfg, key))} values for "
                             f"{plural(count, 'band')} ({', '.join(run_band_names(cfg))})")


def resolve(cfg: ImageDataConfig, items: Items) -> ImageDataConfig:
    """``cfg`` with what its files decide (see the module's docstring)."""
    if not items.count:
        raise FileNotFoundError(f"data.root: no image files under {cfg.root}")
    reader = choose_reader(cfg, items)
    cfg = _chosen_stats(_photo_bands(cfg) if reader == "photo" else _raster_bands(cfg, items))
    if reader == "photo" and "auto" not in (cfg.mean, cfg.std):
        _check_lengths(cfg)
        return cfg
    cfg = _auto_stats(cfg, items)
    _check_lengths(cfg)
    return cfg
