"""The built-in multispectral demo set (``data.demo=raster``): procedural Sentinel-2-like scenes
that need no download.

Every scene is 13 bands (Sentinel-2's, L1C order, ``BAND_NAMES`` / ``WAVELENGTHS``) of uint16
digital numbers, reflectance x 10000 as Sentinel-2 stores them (so ``data.scale=10000`` gives
reflectance), clipped to [1, 65535]; 0 is nodata, as in Sentinel-2 products.

A scene is one of six land-use arrangements of regions (``ARRANGEMENTS``; the labelled classes,
``CLASSES``), each region one of a palette of three different covers (of the six of
``SIGNATURES``) drawn for the scene, each pixel the signature of its cover times a smooth
brightness field, a per-region gain and a per-cover texture, plus per-pixel noise:

    parcels    regular field parcels: a turned grid of rectangles 6-12 px by 0.6-1.4 times that
    strips     strip cropping: straight parallel strips 2-6 px wide at a random angle
    terraces   contour terraces: the bands between 12-21 contours of a smooth hill
    pivots     centre-pivot irrigation: circles in a turned grid of square sections 12-17 px
               wide (15 % of them fallow), on a background of one cover
    corridor   one or two winding strips 2-6 px wide (a river, a road) between wide banks
    patchwork  a natural patchwork: 24-59 irregular Voronoi cells on domain-warped coordinates

The class is the arrangement alone: every scene, whatever its class, draws its palette
uniformly (three of six covers, in random order) and gives each region a palette slot with the
same symmetric rule, so every cover's expected share is the same in every class and the mean
spectrum and the per-band statistics say nothing of the class (nearest centroid on the per-band
means: at chance, ``tests/unit/test_raster_demo.py``); the layout does. A pretraining scene's
arrangement is drawn at random, so the unlabelled part holds the same patterns, mixed. One
scene in five (``index % 5 == 4``) has a corner swath of nodata (0 in every band), as at a
tile's edge.

Files: one-page TIFFs, planar ``[C, H, W]`` (``planarconfig=separate``, ``minisblack``,
uncompressed), with the tags GDAL writes: GDAL_METADATA (42112: per band ``WAVELENGTH``,
``WAVELENGTH_UNITS`` and ``DESCRIPTION``, plus GDAL 3.10's ``CENTRAL_WAVELENGTH_UM`` in the
IMAGERY domain; item for item what GDAL 3.10 writes for the same settings), GDAL_NODATA (42113:
"0") and a GeoTIFF georeference (UTM 32N, 10 m pixels, each scene at its own place), so
rasterio and a tifffile reader both see the band names, the wavelengths and the nodata value.

Layout, in ``$MIM_CACHE_DIR/demo_raster/<VERSION>/`` (default ``~/.cache/mim``)::

    pretrain/scene_XXXX.tif             PRETRAIN_COUNT scenes, arrangements drawn at random
    labelled/<class>/scene_XXXX.tif     PER_CLASS scenes of each arrangement in CLASSES

written once into a temporary sibling and published by an atomic rename (a concurrent writer
may win; a leftover temporary folder is never read). Writing the whole set (600 scenes of
96 x 96, 146 MB) took 3.2 s on one core (``taskset -c 0``) of an "Intel(R) Xeon(R) Processor"
(lscpu's model name), 5 ms a scene (6.0 s when another process shared the core).

Determinism: each scene is seeded from its part and index alone (``numpy.random.default_rng``
of ``[SEED, part, index]``) and draws nothing but ``Generator.random`` (uniform doubles, the
bit generator's output scaled: a stream NumPy keeps across versions); everything else is
elementwise +, -, *, /, floor and rounding, exact in IEEE arithmetic (turns by the rational
parametrisation of the angle, widths summed as integers), with no BLAS, no transcendental
functions and no floating-point reductions, so the pixels are the same on every
machine, and the files byte-identical for the same tifffile.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mim.data.cache import cache_root, written_once

log = logging.getLogger("mim.data")

VERSION = "v2"
SEED = 20250213
SIZE = 96  # a scene's side, in pixels
PRETRAIN_COUNT = 240
PER_CLASS = 60
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
COVERS = tuple(SIGNATURES)
# how much each class's reflectance varies within a region (canopy shadows, buildings, dunes)
TEXTURE = {"water": 0.03, "forest": 0.25, "crops": 0.12, "bare_soil": 0.12, "urban": 0.40,
           "snow": 0.06}
PARTS = {"pretrain": 0, "labelled": 1}


def cache_dir() -> Path:
    """``$MIM_CACHE_DIR/demo_raster`` (default ``~/.cache/mim/demo_raster``), the sibling of
    ``demo.cache_dir()``."""
    return cache_root() / "demo_raster"


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


def _curve(rng: np.random.Generator, s: np.ndarray, cells: int) -> np.ndarray:
    """A smooth 1-D function in [0, 1) of s in [-0.75, 0.75) (uniform knots, smoothstep
    interpolation), evaluated elementwise. [same shape as s]"""
    knots = _uniform(rng, cells + 1)  # [g]
    pos = np.clip((s + 0.75) * (cells / 1.5), 0.0, cells - 1e-9)
    low = np.floor(pos).astype(np.int64)
    t = pos - low
    t = t * t * (3.0 - 2.0 * t)
    return knots[low] * (1.0 - t) + knots[low + 1] * t


def _nodata_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A corner swath, as at a tile's edge: True where there is no data. [size, size]"""
    u = _uniform(rng, 2)
    axis = (np.arange(size) + 0.5) / size  # [size]
    x, y = axis[None, :], axis[:, None]  # [1, size], [size, 1]
    corner = int(u[0] * 4)
    x = 1.0 - x if corner & 1 else x
    y = 1.0 - y if corner & 2 else y
    return (x + y) < 0.25 + 0.35 * u[1]  # [size, size], at most ~18 % of the scene


def _frame(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene's coordinates about its centre turned by a random angle in [-90, 90) degrees:
    (along, across), each [size, size], in scene widths. The turn's cosine and sine are the
    rational parametrisation ((1 - t^2) / (1 + t^2), 2t / (1 + t^2)) of t = tan(angle / 2), so
    no trigonometric function is called."""
    t = 2.0 * _uniform(rng, 1)[0] - 1.0
    cos, sin = (1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t)
    axis = (np.arange(size) + 0.5) / size - 0.5  # [size]
    x, y = axis[None, :], axis[:, None]  # [1, size], [size, 1]
    return x * cos + y * sin, y * cos - x * sin  # [size, size] each, within +-0.71


def _regions(ids: np.ndarray) -> np.ndarray:
    """Integer labels -> 0 .. K-1 in the order of their values. [same shape]"""
    return np.unique(ids, return_inverse=True)[1].reshape(ids.shape)


def _fill(rng: np.random.Generator, regions: np.ndarray, slots: tuple[int, ...]) -> np.ndarray:
    """One palette slot, drawn uniformly from ``slots``, for every region. [K] int"""
    u = _uniform(rng, int(regions.max()) + 1)  # [K]
    return np.array(slots)[np.floor(u * len(slots)).astype(np.int64)]


def _parcels(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Regular field parcels: a turned grid of rectangles 6-12 px by 0.6-1.4 times that, one
    cover each."""
    along, across = _frame(rng, size)
    u = _uniform(rng, 4)
    width = 0.065 + 0.065 * u[0]
    height = width * (0.6 + 0.8 * u[1])
    i = np.floor((along + u[2] * width) / width).astype(np.int64)
    j = np.floor((across + u[3] * height) / height).astype(np.int64)
    regions = _regions(i * 1000 + j)
    return regions, _fill(rng, regions, (0, 1, 2))


def _strips(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Strip cropping: straight parallel strips 2-6 px wide at a random angle, each a cover
    other than its neighbour's."""
    along, _ = _frame(rng, size)
    widths = 22 + np.floor(_uniform(rng, 80) * 40).astype(np.int64)  # in 1/1024 of the scene
    edges = (np.cumsum(widths) - 768) / 1024.0  # exact: integers, then a power of two
    regions = np.searchsorted(edges, along)  # [size, size], 0 .. 40
    return regions, _alternate(rng, int(regions.max()) + 1)


def _alternate(rng: np.random.Generator, count: int) -> np.ndarray:
    """Palette slots for ``count`` regions in a row, each one other than the one before. [K]"""
    u = _uniform(rng, count)
    slots = np.zeros(count, np.int64)
    slots[0] = int(u[0] * 3)
    for k in range(1, count):
        slots[k] = (slots[k - 1] + 1 + int(u[k] * 2)) % 3
    return slots


def _terraces(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Contour terraces: bands between the contours of a smooth hill, 12-21 levels, each a
    cover other than the band below's."""
    hill = 0.7 * _smooth(rng, size, 2) + 0.3 * _smooth(rng, size, 3)  # [size, size] in [0, 1)
    levels = 12 + int(_uniform(rng, 1)[0] * 10)
    regions = np.floor(hill * levels).astype(np.int64)  # 0 .. levels - 1
    return regions, _alternate(rng, levels)


def _pivots(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-pivot irrigation: a turned grid of square sections 12-17 px wide, most with a
    circular field inscribed, on a background of one cover."""
    along, across = _frame(rng, size)
    u = _uniform(rng, 4)
    side = 0.12 + 0.06 * u[0]
    radius = 0.40 + 0.09 * u[1]  # of the side
    a = (along + u[2] * side) / side
    b = (across + u[3] * side) / side
    i, j = np.floor(a), np.floor(b)
    da, db = a - i - 0.5, b - j - 0.5
    cell = _regions(i.astype(np.int64) * 1000 + j.astype(np.int64))  # [size, size]
    irrigated = _uniform(rng, int(cell.max()) + 1) < 0.85  # [cells]
    inside = (da * da + db * db < radius * radius) & irrigated[cell]
    regions = np.where(inside, cell + 1, 0)  # 0: the background
    fields = _fill(rng, regions, (1, 2))
    fields[0] = 0
    return regions, fields


def _corridor(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A winding corridor (a river, a road, a hedgerow) 2-6 px wide across the scene, one
    cover, between two banks of the two others; one scene in two has a second one."""
    u = _uniform(rng, 5)
    slots = np.full((size, size), -1, np.int64)
    regions = np.zeros((size, size), np.int64)
    for k in range(1 + int(u[0] < 0.5)):
        along, across = _frame(rng, size)
        centre = (u[1 + 2 * k] - 0.5) * 0.4 + 0.5 * (_curve(rng, along, 3) - 0.5)
        half = 0.012 + 0.02 * u[2 + 2 * k]
        offset = across - centre
        regions = regions * 2 + (offset > 0)  # the side of each corridor
        slots = np.where((offset * offset < half * half) & (slots < 0), 0, slots)
    regions = np.where(slots == 0, 0, regions + 1)
    banks = _fill(rng, regions, (1, 2))
    banks[0] = 0
    return regions, banks


def _patchwork(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A natural patchwork: the nearest of 24-59 seeds on domain-warped coordinates (irregular
    Voronoi cells), one cover each."""
    count = 24 + int(_uniform(rng, 1)[0] * 36)
    seeds = _uniform(rng, count, 2)  # [K, 2] (x, y)
    axis = (np.arange(size) + 0.5) / size  # [size]
    x = axis[None, :] + 0.25 * (_smooth(rng, size, 3) - 0.5)  # [size, size]
    y = axis[:, None] + 0.25 * (_smooth(rng, size, 3) - 0.5)  # [size, size]
    dx = x[None] - seeds[:, 0, None, None]  # [K, size, size]
    dy = y[None] - seeds[:, 1, None, None]  # [K, size, size]
    regions = np.argmin(dx * dx + dy * dy, axis=0)  # [size, size]
    return regions, _fill(rng, regions, (0, 1, 2))


ARRANGEMENTS = {"parcels": _parcels, "strips": _strips, "terraces": _terraces,
                "pivots": _pivots, "corridor": _corridor, "patchwork": _patchwork}
CLASSES = tuple(ARRANGEMENTS)


def _palette(rng: np.random.Generator) -> np.ndarray:
    """Three different covers, uniformly at random, in random order. [3] int"""
    u = _uniform(rng, 3)
    left = list(range(len(COVERS)))
    return np.array([left.pop(int(u[k] * (len(COVERS) - k))) for k in range(3)])


def scene(part: str, index: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``part`` (pretrain, labelled): (digital numbers, uint16 [13, size,
    size]; cover of every pixel (an index into ``COVERS``), int [size, size], -1 where there is
    no data). A labelled scene's arrangement is ``CLASSES[index % len(CLASSES)]``, a
    pretraining scene's one drawn at random."""
    rng = np.random.default_rng([SEED, PARTS[part], index])
    pick = _uniform(rng, 1)[0]
    label = index % len(CLASSES) if part == "labelled" else int(pick * len(CLASSES))
    nodata = _nodata_mask(rng, size) if index % 5 == 4 else np.zeros((size, size), bool)
    palette = _palette(rng)  # [3]
    regions, slots = ARRANGEMENTS[CLASSES[label]](rng, size)  # [H, W], [K]
    covers = palette[slots][regions]  # [H, W]
    gain = 0.9 + 0.2 * _uniform(rng, int(regions.max()) + 1)  # [K]
    texture = np.array([TEXTURE[c] for c in COVERS])[covers]  # [H, W]
    brightness = ((0.8 + 0.4 * _smooth(rng, size, 4)) * gain[regions]
                  * (1.0 + texture * (_smooth(rng, size, 24) - 0.5)))  # [H, W]
    signatures = np.array([SIGNATURES[c] for c in COVERS])  # [covers, 13]
    reflectance = signatures.T[:, covers] * brightness[None]  # [13, H, W]
    noise = _uniform(rng, 2, len(BAND_NAMES), size, size)  # [2, 13, H, W]
    reflectance = reflectance + (0.004 + 0.02 * reflectance) * (noise[0] + noise[1] - 1.0)
    digital = np.clip(np.rint(reflectance * SCALE), 1, 65535).astype(np.uint16)  # [13, H, W]
    digital[:, nodata] = NODATA
    return digital, np.where(nodata, -1, covers)


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
    return written_once(folder, _write_set, f"demo rasters: wrote "
                        f"{PRETRAIN_COUNT + PER_CLASS * len(CLASSES)} Sentinel-2-like scenes")


def pretrain_files() -> tuple[Path, list[Path]]:
    """(root, files) of the pretraining scenes."""
    root = raster_demo_folder() / "pretrain"
    return root, sorted(root.glob("scene_*.tif"))


def labelled_folder() -> Path:
    """The labelled scenes as class folders (``labelled/<class>/scene_XXXX.tif``)."""
    return raster_demo_folder() / "labelled"
