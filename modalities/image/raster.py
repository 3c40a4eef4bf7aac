"""A scientific raster file -> every band at its own bit depth, with the names the file gives.

What reads what (``read_raster``):
- TIFF (``.tif``, ``.tiff``): rasterio where it is installed (the ``raster`` extra: GeoTIFF and
  COG, every compression GDAL reads; band descriptions, nodata, the geotransform), else, and for
  a multi-page TIFF (GDAL opens its first page only), tifffile. tifffile reads the same metadata GDAL writes (the GDAL_METADATA tag's per-band
  DESCRIPTION and WAVELENGTH items, the GDAL_NODATA tag). A page's samples are its bands; the
  pages of a multi-page TIFF are bands too.
- ``.npy`` / ``.npz`` (one array, or the one named ``image`` / ``x``): ``[C, H, W]``, or
  ``[H, W, C]`` under ``data.layout=hwc``; a 2D array is one band.
- Everything else PIL reads (16-bit PNG, 8-bit PNG, JPEG, ...): its own channels (``L``: 1,
  ``I;16``: 1 band of uint16, ``RGB``: 3, ``RGBA``: 4), never converted.

Nothing is rescaled, cast or filled here: the values are the file's, in its dtype. Photos (RGB
pictures of the world) are read by ``decode.py`` instead, as ImageNet pipelines read them.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
# a file above this many values per band is refused before it is read (int32 indexing,
# and PIL's own bomb limit is far below it)
MAX_PIXELS = 2 ** 31
GDAL_METADATA, GDAL_NODATA = 42112, 42113  # GDAL's private TIFF tags


class RasterError(ValueError):
    """A file that cannot be one of the run's samples: the message names why, ``kind`` counts
    it (the data failure summary groups by kind)."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


@dataclass
class Header:
    """What a file says about itself, read without its pixels where the format allows."""

    bands: int
    height: int
    width: int
    dtype: str  # numpy's name: uint8, uint16, int16, float32, ...
    names: list[str] = field(default_factory=list)  # one per band, or [] (the file names none)
    wavelengths: list[float] = field(default_factory=list)  # µm, one per band, or []
    nodata: Optional[float] = None  # the value the file declares as no data (NaN possible)


@dataclass
class Raster:
    values: np.ndarray  # [C, H, W] in the file's dtype
    header: Header


def is_array_file(name: str) -> bool:
    return Path(name).suffix.lower() in ARRAY_SUFFIXES


def is_tiff_file(name: str) -> bool:
    return Path(name).suffix.lower() in TIFF_SUFFIXES


def _source(path: Path | bytes):
    return io.BytesIO(path) if isinstance(path, bytes) else path


def _check_size(height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise RasterError(f"{height} x {width} = {height * width} pixels per band, more than "
                          f"2^31: split the file into tiles", "too large")


# -- GDAL's metadata in a TIFF -------------------------------------------------------------------
def gdal_band_items(xml: str, bands: int) -> tuple[list[str], list[float]]:
    """GDAL_METADATA's per-band DESCRIPTION and WAVELENGTH items -> (names, wavelengths in µm),
    each [] unless every band has one."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return [], []
    names: dict[int, str] = {}
    waves: dict[int, float] = {}
    for item in root.iter("Item"):
        sample = item.get("sample")
        if sample is None or not sample.isdigit():
            continue
        key, text = item.get("name", "").upper(), (item.text or "").strip()
        if key == "DESCRIPTION" or item.get("role") == "description":
            names[int(sample)] = text
        elif key in ("WAVELENGTH", "CENTRAL_WAVELENGTH"):
            try:
                waves[int(sample)] = float(text)
            except ValueError:
                pass
    full = range(bands)
    return ([names[i] for i in full] if all(names.get(i) for i in full) else [],
            [waves[i] for i in full] if all(i in waves for i in full) else [])


def _nodata_value(text) -> Optional[float]:
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        return None


# -- TIFF by tifffile ----------------------------------------------------------------------------
def _tiff_bands_first(array: np.ndarray, axes: str) -> np.ndarray:
    """tifffile's array with its axes string (e.g. ``SYX``, ``YXS``, ``IYX``) -> [C, H, W]: every
    axis but Y and X becomes a band axis, in stored order."""
    if "Y" not in axes or "X" not in axes:
        raise RasterError(f"a TIFF without a Y and X axis ({axes})", "not a raster")
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    moved = np.moveaxis(array, others + [axes.index("Y"), axes.index("X")],
                        list(range(array.ndim)))  # [*others, H, W]
    return moved.reshape(-1, *moved.shape[-2:])  # [C, H, W]


def _tiff_header(tif, shape: tuple[int, ...], dtype: np.dtype) -> Header:
    page = tif.pages.first
    bands = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    names: list[str] = []
    waves: list[float] = []
    tag = page.tags.get(GDAL_METADATA)
    if tag is not None:
        names, waves = gdal_band_items(str(tag.value), bands)
    nodata_tag = page.tags.get(GDAL_NODATA)
    return Header(bands, shape[-2], shape[-1], np.dtype(dtype).name, names, waves,
                  None if nodata_tag is None else _nodata_value(nodata_tag.value))


def _series_shape(series) -> tuple[int, ...]:
    """The series' shape with its bands first: (C..., H, W)."""
    axes, shape = series.axes, series.shape
    others = [n for a, n in zip(axes, shape) if a not in "YX"]
    return (*others, shape[axes.index("Y")], shape[axes.index("X")])


def tiff_header(path: Path | bytes) -> Header:
    import tifffile

    with tifffile.TiffFile(_source(path)) as tif:
        series = tif.series[0]
        shape = _series_shape(series)
        return _tiff_header(tif, shape, series.dtype)


def read_tiff(path: Path | bytes) -> Raster:
    import tifffile

    with tifffile.TiffFile(_source(path)) as tif:
        series = tif.series[0]
        shape = _series_shape(series)
        _check_size(shape[-2], shape[-1])
        header = _tiff_header(tif, shape, series.dtype)
        return Raster(_tiff_bands_first(series.asarray(), series.axes), header)


# -- GeoTIFF / COG by rasterio (the raster extra) ------------------------------------------------
def rasterio_available() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _rasterio_header(src) -> Header:
    names = list(src.descriptions) if all(src.descriptions) else []
    waves: list[float] = []
    tags = [src.tags(i + 1) for i in range(src.count)]
    if all("WAVELENGTH" in t for t in tags):
        try:
            waves = [float(t["WAVELENGTH"]) for t in tags]
        except ValueError:
            waves = []
    return Header(src.count, src.height, src.width, src.dtypes[0], names, waves,
                  None if src.nodata is None else float(src.nodata))


def _rasterio_open(path: Path | bytes):
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():  # a plain TIFF has no geotransform: nothing to warn about
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if isinstance(path, bytes):
            memfile = rasterio.io.MemoryFile(path)
            return memfile, memfile.open()
        return None, rasterio.open(path)


def rasterio_read(path: Path | bytes, pixels: bool = True) -> Raster | Header:
    memfile, src = _rasterio_open(path)
    try:
        if src.subdatasets:  # GDAL_DIR:n pages beyond the first
            raise MultiPage()
        header = _rasterio_header(src)
        if len(set(src.dtypes)) > 1:
            raise RasterError(f"bands of several dtypes ({', '.join(sorted(set(src.dtypes)))})",
                              "other dtype")
        if not pixels:
            return header
        _check_size(src.height, src.width)
        return Raster(src.read(), header)  # [C, H, W]
    finally:
        src.close()
        if memfile is not None:
            memfile.close()


# -- arrays and PIL ------------------------------------------------------------------------------
def _load_array(path: Path | bytes, mmap: bool) -> np.ndarray:
    source = _source(path)
    if not isinstance(path, bytes) and path.suffix.lower() == ".npy":
        return np.load(source, mmap_mode="r" if mmap else None, allow_pickle=False)
    if isinstance(path, bytes) and not path[:2] == b"PK":  # an .npy member of a shard
        return np.load(source, allow_pickle=False)
    with np.load(source, allow_pickle=False) as npz:
        keys = list(npz.keys())
        key = next((k for k in ("image", "x") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise RasterError(f"an .npz of {len(keys)} arrays ({', '.join(keys[:4])}) and none "
                              "named image or x", "not a raster")
        return npz[key]


def _bands_first(array: np.ndarray, layout: str) -> np.ndarray:
    if array.ndim == 2:
        return array[None]  # [H, W] -> [1, H, W]
    if array.ndim != 3:
        raise RasterError(f"an array of shape {list(array.shape)}: expected [C, H, W] or "
                          "[H, W, C] (data.layout)", "not a raster")
    return array if layout == "chw" else np.moveaxis(array, -1, 0)  # [H, W, C] -> [C, H, W]


def read_array(path: Path | bytes, layout: str, pixels: bool = True) -> Raster | Header:
    array = _bands_first(_load_array(path, mmap=not pixels), layout)  # [C, H, W]
    if array.dtype.kind not in "uif" or array.dtype.itemsize > 8:
        raise RasterError(f"an array of dtype {array.dtype}, not numbers", "not a raster")
    header = Header(array.shape[0], array.shape[1], array.shape[2], array.dtype.name)
    if not pixels:
        return header
    _check_size(header.height, header.width)
    return Raster(np.ascontiguousarray(array), header)


# PIL modes -> (bands, dtype) of their pixels as numpy sees them
PIL_MODES = {"1": (1, "bool"), "L": (1, "uint8"), "P": (1, "uint8"), "LA": (2, "uint8"),
             "RGB": (3, "uint8"), "RGBA": (4, "uint8"), "CMYK": (4, "uint8"),
             "I;16": (1, "uint16"), "I;16B": (1, "uint16"), "I;16L": (1, "uint16"),
             "I;16N": (1, "uint16"), "I": (1, "int32"), "F": (1, "float32")}


def read_pil(path: Path | bytes, pixels: bool = True) -> Raster | Header:
    from PIL import Image

    with Image.open(_source(path)) as image:
        if image.mode not in PIL_MODES:
            raise RasterError(f"a picture of mode {image.mode}", "not a raster")
        bands, dtype = PIL_MODES[image.mode]
        header = Header(bands, image.height, image.width, dtype)
        if not pixels:
            return header
        array = np.asarray(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if image.mode.startswith("I;16") and array.dtype != np.uint16:
        array = array.astype(np.uint16)  # PIL's big-endian 16-bit -> native, same values
    header.dtype = array.dtype.name
    return Raster(_bands_first(array, "hwc"), header)


# -- the one entry point -------------------------------------------------------------------------
class MultiPage(Exception):
    """A TIFF of several pages, which GDAL opens as its first page alone (the others are its
    subdatasets): tifffile reads it whole, its pages as bands."""


def read_raster(path: Path | bytes, name: str, layout: str = "chw",
                pixels: bool = True) -> Raster | Header:
    """The file's bands ``[C, H, W]`` in its dtype (``pixels=False``: its ``Header`` only);
    ``name``: the file's name (a shard member's, for its suffix). Raises ``RasterError`` for a
    file that is not a raster mim reads, and the readers' own errors for a damaged one."""
    if is_array_file(name):
        return read_array(path, layout, pixels)
    if is_tiff_file(name):
        if rasterio_available():
            try:
                return rasterio_read(path, pixels)
            except MultiPage:
                pass
        return read_tiff(path) if pixels else tiff_header(path)
    return read_pil(path, pixels)


def band_index(names: list[str], wanted: list, count: int, file_names: bool) -> list[int]:
    """``data.bands`` (indices or names, in the run's order) -> indices into the file's bands;
    ValueError naming the first that is not there."""
    out = []
    for band in wanted:
        if isinstance(band, int) and not isinstance(band, bool):
            if not 0 <= band < count:
                raise ValueError(f"data.bands: band {band} is not in the data's {count} bands "
                                 f"(0-{count - 1})")
            out.append(band)
        elif str(band) in names:
            out.append(names.index(str(band)))
        else:
            source = "the file's band names" if file_names else "data.band_names"
            raise ValueError(f"data.bands: '{band}' is not a band of the data ({source}: "
                             f"{', '.join(names) or 'none'})")
    if len(set(out)) != len(out):
        raise ValueError(f"data.bands: a band is named twice in {list(wanted)}")
    return out


DEFAULT_NAME = re.compile(r"^band\d+$")


def default_names(count: int) -> list[str]:
    """Names for a file that gives none: band0, band1, ..."""
    return [f"band{i}" for i in range(count)]


def location(path: Path | bytes) -> tuple[float, float]:
    """(latitude, longitude) of a GeoTIFF's centre, from its georeference by rasterio; NaN
    where the file has none or rasterio is not installed (a plain TIFF, a PNG, an array)."""
    nan = (float("nan"), float("nan"))
    if isinstance(path, bytes) or not is_tiff_file(path.name) or not rasterio_available():
        return nan
    from rasterio.warp import transform

    memfile, src = _rasterio_open(path)
    try:
        if src.crs is None:
            return nan
        x, y = src.xy(src.height // 2, src.width // 2)
        lons, lats = transform(src.crs, "EPSG:4326", [x], [y])
        return float(lats[0]), float(lons[0])
    finally:
        src.close()
