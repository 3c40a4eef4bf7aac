"""The built-in labelled segmentation demo set (``mim eval segment`` without a root): procedural
RGB scenes of textured shapes with a class id for every pixel, that need no download.

A scene is a backdrop (class 0, ``background``: a smooth blend of two colours, sometimes with a
little grain) under 4-8 overlapping shapes, painted in order (a later shape covers an earlier
one). Every shape is one of the foreground classes, and a class is its TEXTURE (``CLASSES``):

====  ============  ========================================================================
id    name          texture
====  ============  ========================================================================
0     background    smooth two-colour blend, faint grain in one scene in three
1     hstripes      stripes within 20 degrees of horizontal, period 5-8 px
2     vstripes      stripes within 20 degrees of vertical, period 5-8 px
3     checker       a checkerboard of 3-6 px cells, turned by any angle
4     dots          a turned lattice of dots, period 5-8 px
5     grain         per-pixel noise
6     mottle        smooth blotches about 6-12 px across
7     rings         concentric rings about the shape's centre, period 4-7 px
====  ============  ========================================================================

The shape (disk, ellipse, rectangle, triangle, ring, blob, band across the scene) is drawn at
random, each class preferring two of them (``PREFERRED``) half of the time, at a random place
and size (radii 14-34 % of the scene's shorter side), so shapes cut patches anywhere. A region's
colours are a base colour drawn from its class's box (``HUES`` +- ``SPREAD`` per channel: the
boxes overlap, so colour alone is a weak cue; the texture is what separates the classes) and
the base +- a per-channel contrast that the texture blends between; a smooth brightness field
(0.85-1.15) over the scene and a little per-pixel noise are added. A scene's width and height
are each drawn from 72..120 px leaving out the multiples of 8 (``SIDES``), so no size is a
whole number of 8- or 16-pixel patches.

Layout, ADE20K's, in ``$MIM_CACHE_DIR/demo_segment/<VERSION>/`` (default ``~/.cache/mim``)::

    classes.txt                           one class name a line, in id order (id 0 first)
    images/training/scene_XXXX.png        TRAINING_COUNT 8-bit RGB scenes
    annotations/training/scene_XXXX.png   their class ids, 8-bit single channel (mode "L")
    images/validation/scene_XXXX.png      VALIDATION_COUNT scenes
    annotations/validation/scene_XXXX.png

(an annotation holds the class id itself, 0 = background: no id is reserved for "unlabelled").
The set is written once into a temporary sibling and published by an atomic rename (a
concurrent writer may win; a leftover temporary folder is never read). Writing it (200 scenes,
4.0 MB) took 1.0 s on one core (``taskset -c 0``, best of three on a busy machine) of an
"Intel(R) Xeon(R) Processor @ 2.80GHz" (lscpu's model name), 5 ms a scene: about half drawing,
half PNG compression.

Determinism: each scene is seeded from its split and index alone (``numpy.random.default_rng``
of ``[SEED, split, index]``) and draws nothing but ``Generator.random`` (uniform doubles, a
stream NumPy keeps across versions); everything else is elementwise +, -, *, /, sqrt, floor,
abs, comparisons and rounding, exact in IEEE arithmetic (turns use the rational
parametrisation of the half-angle's tangent, no trigonometric function), with no BLAS and no
floating-point reductions, so the pixels are the same on every machine, and the PNG files
byte-identical for the same Pillow and zlib.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mim.data.cache import cache_root, written_once

log = logging.getLogger("mim.data")

VERSION = "v1"
SEED = 20250611
TRAINING_COUNT = 160
VALIDATION_COUNT = 40
SPLITS = {"training": 0, "validation": 1}
COUNTS = {"training": TRAINING_COUNT, "validation": VALIDATION_COUNT}
SIDES = tuple(n for n in range(72, 121) if n % 8)  # widths and heights: no multiple of 8
CLASSES = ("background", "hstripes", "vstripes", "checker", "dots", "grain", "mottle", "rings")
SHAPES = ("disk", "ellipse", "rectangle", "triangle", "ring", "blob", "band")
# each foreground class's two favourite shapes, taken half of the time
PREFERRED = {"hstripes": ("band", "rectangle"), "vstripes": ("rectangle", "ellipse"),
             "checker": ("rectangle", "triangle"), "dots": ("disk", "ellipse"),
             "grain": ("blob", "triangle"), "mottle": ("blob", "disk"),
             "rings": ("ring", "disk")}
# the centre of each class's box of base colours (RGB in [0, 1]); a base is drawn within
# +- SPREAD of it per channel, so neighbouring boxes overlap widely
HUES = {"background": (0.50, 0.55, 0.50), "hstripes": (0.62, 0.42, 0.40),
        "vstripes": (0.40, 0.50, 0.62), "checker": (0.55, 0.55, 0.38),
        "dots": (0.42, 0.60, 0.45), "grain": (0.58, 0.45, 0.58), "mottle": (0.60, 0.55, 0.48),
        "rings": (0.45, 0.45, 0.55)}
SPREAD = 0.28


def cache_dir() -> Path:
    """``$MIM_CACHE_DIR/demo_segment`` (default ``~/.cache/mim/demo_segment``), the sibling of
    ``raster_demo.cache_dir()``."""
    return cache_root() / "demo_segment"


# -- fields --------------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape)  # float64 in [0, 1): the one draw a scene makes


def _axis(n: int, cells: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell and smoothstep weight of n pixel centres over ``cells`` cells. ([n], [n])"""
    pos = (np.arange(n) + 0.5) * (cells / n)
    low = np.floor(pos).astype(np.int64)
    t = pos - low
    return low, t * t * (3.0 - 2.0 * t)


def _smooth(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A smooth field in [0, 1) with features about ``scale`` pixels across: uniform values on
    a grid of that pitch, interpolated with smoothstep weights. [h, w]"""
    rows_n, cols_n = max(1, int(h / scale)), max(1, int(w / scale))
    grid = _uniform(rng, rows_n + 1, cols_n + 1)
    low_y, ty = _axis(h, rows_n)
    low_x, tx = _axis(w, cols_n)
    rows = grid[low_y] * (1.0 - ty)[:, None] + grid[low_y + 1] * ty[:, None]  # [h, g]
    return rows[:, low_x] * (1.0 - tx)[None, :] + rows[:, low_x + 1] * tx[None, :]


def _turn(t: float) -> tuple[float, float]:
    """(cos, sin) of the angle whose half has tangent t: 2 atan(t), no trigonometry."""
    return (1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t)


def _frame(x: np.ndarray, y: np.ndarray, cx: float, cy: float,
           cos: float, sin: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates about (cx, cy) turned by the angle of (cos, sin): (along, across)."""
    dx, dy = x - cx, y - cy
    return dx * cos + dy * sin, dy * cos - dx * sin


def _triangle_wave(s: np.ndarray) -> np.ndarray:
    """0 at integers, 1 at half-integers, linear between; sharpened into stripes. [same]"""
    tri = np.abs(2.0 * (s - np.floor(s)) - 1.0)
    return np.clip(2.0 * tri - 0.5, 0.0, 1.0)


# -- shapes: a bool mask [h, w] ------------------------------------------------------------------
def _shape(rng: np.random.Generator, kind: str, x: np.ndarray, y: np.ndarray,
           h: int, w: int) -> tuple[np.ndarray, float, float]:
    """A shape of ``kind`` at a random place and size: (mask [h, w], centre x, centre y)."""
    side = min(h, w)
    u = _uniform(rng, 6)
    cx, cy = (0.1 + 0.8 * u[0]) * w, (0.1 + 0.8 * u[1]) * h
    r = side * (0.14 + 0.2 * u[2])
    cos, sin = _turn(2.0 * u[3] - 1.0)  # any angle in [-90, 90)
    along, across = _frame(x, y, cx, cy, cos, sin)
    if kind == "disk":
        mask = along * along + across * across < r * r
    elif kind == "ellipse":
        b = r * (0.35 + 0.5 * u[4])
        mask = (along / r) ** 2 + (across / b) ** 2 < 1.0
    elif kind == "rectangle":
        b = r * (0.3 + 0.7 * u[4])
        mask = (np.abs(along) < r) & (np.abs(across) < b)
    elif kind == "triangle":
        # an equilateral triangle's corners in the turned frame, each moved by up to 0.35 r
        local = (np.array([[1.0, 0.0], [-0.5, 0.8660254037844386], [-0.5, -0.8660254037844386]])
                 + 0.7 * (_uniform(rng, 3, 2) - 0.5)) * r  # [3, (along, across)]
        sides = []
        for k in range(3):
            (aa, ab), (ba, bb) = local[k], local[(k + 1) % 3]
            sides.append((ba - aa) * (across - ab) - (bb - ab) * (along - aa))
        mask = (((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0))
                | ((sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0)))
    elif kind == "ring":
        inner = r * (0.4 + 0.3 * u[4])
        d2 = along * along + across * across
        mask = (d2 < r * r) & (d2 >= inner * inner)
    elif kind == "blob":
        wobble = _smooth(rng, h, w, 0.5 * r + 4.0)
        d = np.sqrt(along * along + across * across) / r
        mask = d < 0.55 + 0.9 * wobble
    elif kind == "band":
        half = side * (0.07 + 0.09 * u[4])
        mask = np.abs(across) < half
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return mask, cx, cy


# -- textures: a field in [0, 1] [h, w] ----------------------------------------------------------
def _texture(rng: np.random.Generator, name: str, x: np.ndarray, y: np.ndarray,
             h: int, w: int, cx: float, cy: float) -> np.ndarray:
    u = _uniform(rng, 4)
    period = 5.0 + 3.0 * u[0]
    if name in ("hstripes", "vstripes"):
        cos, sin = _turn(0.35 * (2.0 * u[1] - 1.0))  # within about 20 degrees
        along, across = _frame(x, y, cx, cy, cos, sin)
        return _triangle_wave((across if name == "hstripes" else along) / period + u[2])
    if name == "checker":
        cell = 3.0 + 3.0 * u[0]
        along, across = _frame(x, y, cx, cy, *_turn(2.0 * u[1] - 1.0))
        parity = np.floor(along / cell + u[2]) + np.floor(across / cell + u[3])
        return parity - 2.0 * np.floor(parity / 2.0)  # 0 or 1
    if name == "dots":
        along, across = _frame(x, y, cx, cy, *_turn(2.0 * u[1] - 1.0))
        a, b = along / period + u[2], across / period + u[3]
        da, db = a - np.floor(a) - 0.5, b - np.floor(b) - 0.5
        return (da * da + db * db < 0.09).astype(np.float64)  # dots of 0.3 periods' radius
    if name == "grain":
        noise = _uniform(rng, 2, h, w)
        return 0.5 * (noise[0] + noise[1])
    if name == "mottle":
        field = _smooth(rng, h, w, 6.0 + 6.0 * u[0])
        return np.clip(2.5 * (field - 0.5) + 0.5, 0.0, 1.0)
    if name == "rings":
        ring_period = 4.0 + 3.0 * u[0]
        dx, dy = x - cx, y - cy
        return _triangle_wave(np.sqrt(dx * dx + dy * dy) / ring_period + u[1])
    raise ValueError(f"unknown texture {name!r}")


def _colours(rng: np.random.Generator, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(base colour [3], contrast [3]) of a region of class ``name``."""
    u = _uniform(rng, 7)
    base = np.array(HUES[name]) + SPREAD * (2.0 * u[:3] - 1.0)
    sign = np.where(u[3:6] < 0.5, -1.0, 1.0)
    amplitude = 0.12 + 0.16 * u[6]
    return base, amplitude * (0.4 + 0.6 * u[:3][::-1]) * sign


def scene(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``split`` (training, validation): (RGB, uint8 [H, W, 3]; class ids,
    uint8 [H, W], indices into ``CLASSES``)."""
    rng = np.random.default_rng([SEED, SPLITS[split], index])
    u = _uniform(rng, 4)
    h, w = SIDES[int(u[0] * len(SIDES))], SIDES[int(u[1] * len(SIDES))]
    x = (np.arange(w) + 0.5)[None, :]  # [1, w]
    y = (np.arange(h) + 0.5)[:, None]  # [h, 1]
    # the backdrop: a smooth blend of two colours, faint grain in one scene in three
    base, contrast = _colours(rng, "background")
    blend = _smooth(rng, h, w, 30.0 + 40.0 * u[2])  # [h, w]
    if u[3] < 1.0 / 3.0:
        blend = 0.8 * blend + 0.2 * _uniform(rng, h, w)
    rgb = base + (2.0 * blend[..., None] - 1.0) * (1.5 * contrast)  # [h, w, 3]
    labels = np.zeros((h, w), np.uint8)
    count = 4 + int(_uniform(rng, 1)[0] * 5)  # 4..8 shapes
    for _ in range(count):
        v = _uniform(rng, 3)
        label = 1 + int(v[0] * (len(CLASSES) - 1))
        name = CLASSES[label]
        kind = (PREFERRED[name][int(v[2] * 2)] if v[1] < 0.5
                else SHAPES[int(v[2] * len(SHAPES))])
        mask, cx, cy = _shape(rng, kind, x, y, h, w)
        texture = _texture(rng, name, x, y, h, w, cx, cy)  # [h, w]
        base, contrast = _colours(rng, name)
        rgb[mask] = base + (2.0 * texture[mask][:, None] - 1.0) * contrast  # [n, 3]
        labels[mask] = label
    brightness = 0.85 + 0.3 * _smooth(rng, h, w, 40.0)  # [h, w]
    noise = _uniform(rng, 2, h, w, 3)
    rgb = rgb * brightness[..., None] + 0.03 * (noise[0] + noise[1] - 1.0)
    pixels = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return pixels, labels


# -- files ---------------------------------------------------------------------------------------
def _write_set(root: Path) -> None:
    from PIL import Image

    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for index in range(COUNTS[split]):
            pixels, labels = scene(split, index)
            name = f"scene_{index:04d}.png"
            Image.fromarray(pixels, mode="RGB").save(root / "images" / split / name)
            Image.fromarray(labels, mode="L").save(root / "annotations" / split / name)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))


def segment_demo_folder() -> Path:
    """The demo set's version folder (``classes.txt``, ``images/``, ``annotations/``), written
    on first use."""
    folder = cache_dir() / VERSION
    return written_once(folder, _write_set, f"demo segmentation: wrote "
                        f"{TRAINING_COUNT + VALIDATION_COUNT} labelled scenes")


def training_images() -> tuple[Path, list[Path]]:
    """(root, files) of the training scenes' images (``images/training``), for pretraining."""
    root = segment_demo_folder() / "images" / "training"
    return root, sorted(root.glob("scene_*.png"))
