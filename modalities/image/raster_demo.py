"""The built-in multispectral demo set (``data.demo=raster``): procedural Sentinel-2-like scenes
that need no download.

Every scene is 13 bands (Sentinel-2's, L1C order, ``BAND_NAMES`` / ``WAVELENGTHS``) of uint16
digital numbers, reflectance x 10000 as Sentinel-2 stores them (so ``data.scale=10000`` gives
reflectance), clipped to [1, 65535]; 0 is nodata, as in Sentinel-2 products. A scene is a random
layout of land-cover regions (Voronoi cells on domain-warped coordinates), each pixel the
signature of its class (``SIGNATURES``) times a smooth brightness field, a per-region gain and a
per-class texture, plus per-pixel noise. One scene in five (``index % 5 == 4``) has a corner
swath of nodata (0 in every band), as at a tile's edge.

Files: one-page TIFFs, planar ``[C, H, W]`` (``planarconfig=separate``, ``minisblack``,
uncompressed), with the tags GDAL writes: GDAL_METADATA (42112: per band ``WAVELENGTH``,
``WAVELENGTH_UNITS`` and ``DESCRIPTION``, plus GDAL 3.10's ``CENTRAL_WAVELENGTH_UM`` in the
IMAGERY domain; item for item what GDAL 3.10 writes for the same settings), GDAL_NODATA (42113:
"0") and a GeoTIFF georeference (UTM 32N, 10 m pixels, each scene at its own place), so
rasterio and a tifffile reader both see the band names, the wavelengths and the nodata value.

Layout, in ``$MIM_CACHE_DIR/demo_raster/<VERSION>/`` (default ``~/.cache/mim``)::

    pretrain/scene_XXXX.tif             PRETRAIN_COUNT scenes of mixed land cover
    labelled/<class>/scene_XXXX.tif     PER_CLASS scenes of each class in CLASSES, the class
                                        covering at least DOMINANT of the scene's valid pixels

written once into a temporary sibling and published by an atomic rename (a concurrent writer
may win; a leftover temporary folder is never read). Writing the whole set (480 scenes of
96 x 96, 113 MB) took 3.2 s on one core (``taskset -c 0``) of an "Intel(R) Xeon(R) Processor"
(lscpu's model name), 11 ms a scene.

Determinism: each scene is seeded from its part and index alone (``numpy.random.default_rng``
of ``[SEED, part, index]``) and draws nothing but ``Generator.random`` (uniform doubles, the
bit generator's output scaled: a stream NumPy keeps across versions); everything else is
elementwise +, -, *, /, floor and rounding, exact in IEEE arithmetic, with no BLAS, no
transcendental functions and no floating-point reductions, so the pixels are the same on every
machine, and the files byte-identical for the same tifffile.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger("mim.data")

VERSION = "v1"
SEED = 20250213
SIZE = 96  # a scene's side, in pixels
PRETRAIN_COUNT = 240
PER_CLASS = 40
DOMINANT = 0.6  # a labelled scene's class covers at least this fraction of its valid pixels
NODATA = 0  # Sentinel-2's nodata value
SCALE = 10000  # digital number = reflectance x SCALE (Sentinel-2's quantification value)
PIXEL_METRES = 10.0

# Sentinel-2's 13 bands (L1C; L2A drops B10) and their centre wavelengths in µm (S2A).
BAND_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
              "B12")
WAVELENGTHS = (0.443, 0.490, 0.560, 0.665, 0.705, 0.740, 0.783, 0.842, 0.865, 0.945, 1.375, 1.610,
               2.190)

# Reflectance (0-1) of each land-cover class in the bands above. The shapes follow typical
# published spectral signatures (USGS and ECOSTRESS spectral libraries, Sentinel-2 surface
# reflectance of such covers); the values are approximate and rounded. Water: low, falling into
# the NIR and SWIR. Forest: the green peak, red absorption, the red edge (B05-B07) up to a high
# NIR plateau, SWIR lowered by leaf water. Crops: vegetation, but brighter (a denser, greener
# canopy: higher NIR, brighter green). Bare soil / desert: rising with wavelength into SWIR-1.
# Urban: flat and mid. Snow (and bright cloud): high in the visible, falling through the NIR,
# very low in the SWIR. B09 (0.945, water vapour) and B10 (1.375, cirrus) are absorption
# bands: B09 a little below the NIR, B10 almost nothing but over snow / cloud.
#        B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B10    B11    B12
SIGNATURES: dict[str, tuple[float, ...]] = {
    "water": (
        0.070, 0.065, 0.055, 0.035, 0.030, 0.025, 0.022, 0.018, 0.016, 0.012, 0.002, 0.008, 0.005),
    "forest": (
        0.030, 0.035, 0.060, 0.035, 0.090, 0.210, 0.260, 0.280, 0.290, 0.220, 0.004, 0.140, 0.060),
    "crops": (
        0.045, 0.055, 0.110, 0.055, 0.160, 0.340, 0.420, 0.460, 0.470, 0.360, 0.006, 0.230, 0.110),
    "bare_soil": (
        0.090, 0.110, 0.150, 0.210, 0.240, 0.260, 0.280, 0.300, 0.310, 0.280, 0.010, 0.390, 0.340),
    "urban": (
        0.140, 0.150, 0.160, 0.170, 0.175, 0.180, 0.185, 0.190, 0.195, 0.170, 0.008, 0.210, 0.190),
    "snow": (
        0.880, 0.900, 0.880, 0.850, 0.830, 0.810, 0.780, 0.740, 0.720, 0.580, 0.040, 0.080, 0.050),
}
CLASSES = tuple(SIGNATURES)
# how much each class's reflectance varies within a region (canopy shadows, buildings, dunes)
TEXTURE = {"water": 0.03, "forest": 0.25, "crops": 0.12, "bare_soil": 0.12, "urban": 0.40,
           "snow": 0.06}
PARTS = {"pretrain": 0, "labelled": 1}


def cache_dir() -> Path:
    """``$MIM_CACHE_DIR/demo_raster`` (default ``~/.cache/mim/demo_raster``), the sibling of
    ``demo.cache_dir()``."""
    base = os.environ.get("MIM_CACHE_DIR") or os.path.join("~", ".cache", "mim")
    return Path(base).expanduser() / "demo_raster"


# -- one scene -----------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape)  # float64 in [0, 1): the one draw a scene makes


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth field in [0, 1): uniform values on a (cells + 1)^2 grid, interpolated with
    smoothstep weights (C1, elementwise arithmetic only). [size, size]"""
    grid = _uniform(rng, cells + 1, cells + 1)  # [g, g]
    pos = (np.arange(size) + 0.5) * (cells / size)  # [size], in grid units, < cells
    low = np.floor(pos).astype(np.int64)  # [size]
    t = pos - low
    t = t * t * (3.0 - 2.0 * t)
    rows = grid[low] * (1.0 - t)[:, None] + grid[low + 1] * t[:, None]  # [size, g]
    return rows[:, low] * (1.0 - t)[None, :] + rows[:, low + 1] * t[None, :]  # [size, size]


def _nodata_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A corner swath, as at a tile's edge: True where there is no data. [size, size]"""
    u = _uniform(rng, 2)
    axis = (np.arange(size) + 0.5) / size  # [size]
    x, y = axis[None, :], axis[:, None]  # [1, size], [size, 1]
    corner = int(u[0] * 4)
    x = 1.0 - x if corner & 1 else x
    y = 1.0 - y if corner & 2 else y
    return (x + y) < 0.25 + 0.35 * u[1]  # [size, size], at most ~18 % of the scene


def _layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Region of every pixel: the nearest of 6-15 seeds on domain-warped coordinates (irregular
    Voronoi cells). [size, size] int"""
    count = 6 + int(_uniform(rng, 1)[0] * 10)
    seeds = _uniform(rng, count, 2)  # [K, 2] (x, y)
    axis = (np.arange(size) + 0.5) / size  # [size]
    x = axis[None, :] + 0.25 * (_smooth(rng, size, 3) - 0.5)  # [size, size]
    y = axis[:, None] + 0.25 * (_smooth(rng, size, 3) - 0.5)  # [size, size]
    dx = x[None] - seeds[:, 0, None, None]  # [K, size, size]
    dy = y[None] - seeds[:, 1, None, None]  # [K, size, size]
    return np.argmin(dx * dx + dy * dy, axis=0)  # [size, size]


def _cell_classes(rng: np.random.Generator, cells: np.ndarray, valid: np.ndarray,
                  label: int | None) -> np.ndarray:
    """Class of every region: uniform for a pretraining scene; for a labelled one ``label``
    with others sprinkled in, then the largest other regions turned to ``label`` until it
    covers DOMINANT of the valid pixels. [K] int"""
    count = int(cells.max()) + 1
    u = _uniform(rng, count, 2)  # [K, 2]
    n = len(CLASSES)
    if label is None:
        return np.floor(u[:, 0] * n).astype(np.int64)  # [K]
    other = (label + 1 + np.floor(u[:, 1] * (n - 1)).astype(np.int64)) % n  # [K], never label
    classes = np.where(u[:, 0] < 0.4, other, label)  # [K]
    area = np.bincount(cells[valid], minlength=count)  # [K] valid pixels per region
    while area[classes == label].sum() < DOMINANT * area.sum():
        rest = np.where(classes == label, -1, area)  # [K]
        classes[int(np.argmax(rest))] = label
    return classes


def scene(part: str, index: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``part`` (pretrain, labelled): (digital numbers, uint16 [13, size,
    size]; class of every pixel, int [size, size], -1 where there is no data). A labelled
    scene's class is ``CLASSES[index % len(CLASSES)]``."""
    rng = np.random.default_rng([SEED, PARTS[part], index])
    label = index % len(CLASSES) if part == "labelled" else None
    nodata = _nodata_mask(rng, size) if index % 5 == 4 else np.zeros((size, size), bool)
    cells = _layout(rng, size)  # [H, W]
    classes = _cell_classes(rng, cells, ~nodata, label)[cells]  # [H, W]
    gain = 0.9 + 0.2 * _uniform(rng, int(cells.max()) + 1)  # [K]
    texture = np.array([TEXTURE[c] for c in CLASSES])[classes]  # [H, W]
    brightness = ((0.8 + 0.4 * _smooth(rng, size, 4)) * gain[cells]
                  * (1.0 + texture * (_smooth(rng, size, 24) - 0.5)))  # [H, W]
    signatures = np.array([SIGNATURES[c] for c in CLASSES])  # [classes, 13]
    reflectance = signatures.T[:, classes] * brightness[None]  # [13, H, W]
    noise = _uniform(rng, 2, len(BAND_NAMES), size, size)  # [2, 13, H, W]
    reflectance = reflectance + (0.004 + 0.02 * reflectance) * (noise[0] + noise[1] - 1.0)
    digital = np.clip(np.rint(reflectance * SCALE), 1, 65535).astype(np.uint16)  # [13, H, W]
    digital[:, nodata] = NODATA
    return digital, np.where(nodata, -1, classes)


# -- files ---------------------------------------------------------------------------------------
def gdal_metadata() -> str:
    """The GDAL_METADATA tag's XML, item for item as GDAL 3.10 writes band descriptions,
    ENVI-style WAVELENGTH / WAVELENGTH_UNITS band items and the IMAGERY domain's
    CENTRAL_WAVELENGTH_UM."""
    items = []
    for sample, (name, wave) in enumerate(zip(BAND_NAMES, WAVELENGTHS)):
        items += [f'  <Item name="WAVELENGTH" sample="{sample}">{wave:g}</Item>',
                  f'  <Item name="WAVELENGTH_UNITS" sample="{sample}">Micrometers</Item>',
                  f'  <Item name="CENTRAL_WAVELENGTH_UM" sample="{sample}" domain="IMAGERY">'
                  f'{wave:g}</Item>',
                  f'  <Item name="DESCRIPTION" sample="{sample}" role="description">{name}'
                  '</Item>']
    return "\n".join(["<GDALMetadata>", *items, "</GDALMetadata>"])


def _geotags(part: str, index: int, size: int) -> list[tuple]:
    """GeoTIFF tags: WGS 84 / UTM zone 32N, PIXEL_METRES pixels, scenes side by side."""
    east = 300000.0 + (PARTS[part] * 1000 + index) * size * PIXEL_METRES
    keys = (1, 1, 0, 4,  # GeoKeyDirectory version 1.1.0, 4 keys:
            1024, 0, 1, 1,  # GTModelType: projected
            1025, 0, 1, 1,  # GTRasterType: PixelIsArea
            3072, 0, 1, 32632,  # ProjectedCSType: EPSG 32632
            3076, 0, 1, 9001)  # ProjLinearUnits: metre
    return [(33550, "d", 3, (PIXEL_METRES, PIXEL_METRES, 0.0), True),  # ModelPixelScale
            (33922, "d", 6, (0.0, 0.0, 0.0, east, 5000000.0, 0.0), True),  # ModelTiepoint
            (34735, "H", len(keys), keys, True)]  # GeoKeyDirectory


def write_scene(path: Path, digital: np.ndarray, part: str, index: int) -> None:
    """``digital`` ([13, H, W] uint16) as a planar one-page TIFF with GDAL's tags."""
    import tifffile

    tags = [(42112, "s", 0, gdal_metadata(), True),  # GDAL_METADATA
            (42113, "s", 0, str(NODATA), True),  # GDAL_NODATA
            *_geotags(part, index, digital.shape[-1])]
    tifffile.imwrite(path, digital, photometric="minisblack", planarconfig="separate",
                     metadata=None, software=False, extratags=tags)


def _write_set(root: Path) -> None:
    (root / "pretrain").mkdir(parents=True)
    for index in range(PRETRAIN_COUNT):
        write_scene(root / "pretrain" / f"scene_{index:04d}.tif",
                    scene("pretrain", index)[0], "pretrain", index)
    for name in CLASSES:
        (root / "labelled" / name).mkdir(parents=True)
    for index in range(PER_CLASS * len(CLASSES)):
        name = CLASSES[index % len(CLASSES)]
        write_scene(root / "labelled" / name / f"scene_{index:04d}.tif",
                    scene("labelled", index)[0], "labelled", index)


def raster_demo_folder() -> Path:
    """The demo set's version folder (``pretrain/``, ``labelled/``), written on first use."""
    folder = cache_dir() / VERSION
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        _write_set(tmp)
        tmp.rename(folder)  # atomic publish; a concurrent writer may have won
        log.info("demo rasters: wrote %d Sentinel-2-like scenes into %s",
                 PRETRAIN_COUNT + PER_CLASS * len(CLASSES), folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def pretrain_files() -> tuple[Path, list[Path]]:
    """(root, files) of the pretraining scenes."""
    root = raster_demo_folder() / "pretrain"
    return root, sorted(root.glob("scene_*.tif"))


def labelled_folder() -> Path:
    """The labelled scenes as class folders (``labelled/<class>/scene_XXXX.tif``)."""
    return raster_demo_folder() / "labelled"
