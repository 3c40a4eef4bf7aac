"""Built-in demo data: procedural 3D phantoms, generated once (deterministically) into a cache.

24 volumes of three kinds, the label of each (``labels.csv``, "relative/path,kind"):

* ``ellipsoids``: a body with 3-6 rotated inner ellipsoids of different intensities
  (a 3D Shepp-Logan-like phantom);
* ``tubes``: a body crossed by 2-5 cylinders ("vessels") of different radii and intensities;
* ``textured``: a body filled with smoothed-noise texture and 1-2 ellipsoids.

All get soft edges and a little Gaussian noise; values are scanner-like (about -1000 to 1000).
Shapes vary (64^3 and 80^3 as .npy; 40x72x72 at spacing 1.6 x 1 x 1 mm as .npz with a
'spacing' array), so the demo exercises padding-free cropping and, with ``target_spacing``,
resampling. The cache is ``$MIM_CACHE_DIR/demo_volume/<version>`` (default
``~/.cache/mim``); every file is written under a temporary name and renamed atomically, and
``labels.csv`` is written last, so an interrupted or concurrent generation is never mistaken for
a finished one.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

log = logging.getLogger("mim.data")

VERSION = "v1"
SEED = 20240917
COUNT = 24
KINDS = ("ellipsoids", "tubes", "textured")
LABELS_FILE = "labels.csv"


def cache_dir() -> Path:
    base = os.environ.get("MIM_CACHE_DIR") or os.path.join("~", ".cache", "mim")
    return Path(base).expanduser() / "demo_volume" / VERSION


def _layout(index: int) -> tuple[tuple[int, int, int], tuple[float, float, float], str]:
    """(shape, spacing, suffix) of item ``index``."""
    if index % 4 == 3:
        return (40, 72, 72), (1.6, 1.0, 1.0), ".npz"
    if index % 4 == 0:
        return (80, 80, 80), (1.0, 1.0, 1.0), ".npy"
    return (64, 64, 64), (1.0, 1.0, 1.0), ".npy"


def _coords(shape, spacing) -> np.ndarray:
    """Voxel centres in a common frame: [3, D, H, W], the smallest half-extent is 1."""
    half = min(n * s for n, s in zip(shape, spacing)) / 2
    axes = [((np.arange(n) + 0.5) * s - n * s / 2) / half for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _soft(distance: np.ndarray, sharpness: float = 30.0) -> np.ndarray:
    """~1 inside (distance < 1), ~0 outside, with a smooth edge."""
    return 0.5 * (1.0 - np.tanh(sharpness * (distance - 1.0)))


def _ellipsoid(xyz, centre, axes, rotation) -> np.ndarray:
    local = np.einsum("ij,j...->i...", rotation, xyz - np.reshape(centre, (3, 1, 1, 1)))
    return _soft(np.sqrt(sum((local[k] / axes[k]) ** 2 for k in range(3))))


def _tube(xyz, point, direction, radius) -> np.ndarray:
    rel = xyz - np.reshape(point, (3, 1, 1, 1))
    along = np.einsum("i,i...->...", direction, rel)
    perp = rel - direction.reshape(3, 1, 1, 1) * along
    return _soft(np.sqrt((perp ** 2).sum(0)) / radius)


def phantom(index: int) -> tuple[np.ndarray, tuple[float, float, float], int]:
    """Item ``index`` of the demo: (float32 [D, H, W], spacing, kind)."""
    rng = np.random.default_rng([SEED, index])
    shape, spacing, _ = _layout(index)
    kind = index % len(KINDS)
    xyz = _coords(shape, spacing)
    body_axes = rng.uniform(0.7, 0.92, 3)
    body = _ellipsoid(xyz, rng.uniform(-0.05, 0.05, 3), body_axes, _rotation(rng))
    volume = 0.25 * body
    inside = lambda: rng.uniform(-0.45, 0.45, 3) * body_axes  # noqa: E731
    if kind == 0:
        for _ in range(rng.integers(3, 7)):
            axes = rng.uniform(0.08, 0.35, 3)
            volume += rng.choice([-1, 1]) * rng.uniform(0.1, 0.5) * body * _ellipsoid(
                xyz, inside(), axes, _rotation(rng))
    elif kind == 1:
        for _ in range(rng.integers(2, 6)):
            direction = rng.normal(size=3).astype(np.float32)
            direction /= np.linalg.norm(direction)
            volume += rng.uniform(0.3, 0.6) * body * _tube(xyz, inside(), direction,
                                                           rng.uniform(0.04, 0.12))
    else:
        sigma = rng.uniform(1.5, 3.5) / np.asarray(spacing)
        texture = gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
        texture /= texture.std() + 1e-6
        volume += 0.12 * body * texture
        for _ in range(rng.integers(1, 3)):
            volume += rng.uniform(0.2, 0.5) * body * _ellipsoid(
                xyz, inside(), rng.uniform(0.1, 0.3, 3), _rotation(rng))
    volume += rng.normal(0.0, 0.015, shape).astype(np.float32)
    return (volume * 2000.0 - 1000.0).astype(np.float32), spacing, kind


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode(volume: np.ndarray, spacing, suffix: str) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".npz":
        np.savez_compressed(buffer, image=volume, spacing=np.asarray(spacing, np.float32))
    else:
        np.save(buffer, volume)
    return buffer.getvalue()


def _read_labels(folder: Path) -> list[tuple[str, str]] | None:
    table = folder / LABELS_FILE
    if not table.is_file():
        return None
    with open(table, newline="") as f:
        rows = [(row[0], row[1]) for row in csv.reader(f) if len(row) >= 2]
    if len(rows) != COUNT or not all((folder / rel).is_file() for rel, _ in rows):
        return None
    return rows


def ensure_demo(folder: Path | None = None) -> Path:
    """Generate the demo phantoms into ``folder`` (default ``cache_dir()``) unless present."""
    folder = Path(folder) if folder is not None else cache_dir()
    if _read_labels(folder) is not None:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    log.info("volume demo: generating %d phantoms into %s", COUNT, folder)
    rows = []
    for index in range(COUNT):
        volume, spacing, kind = phantom(index)
        name = f"phantom_{index:02d}_{KINDS[kind]}{_layout(index)[2]}"
        _atomic_write(folder / name, _encode(volume, spacing, _layout(index)[2]))
        rows.append((name, KINDS[kind]))
    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows(rows)
    _atomic_write(folder / LABELS_FILE, table.getvalue().encode())
    return folder


def demo_files() -> tuple[Path, list[Path], list[int], list[str]]:
    """(root, files, labels, classes) of the demo, generating it on first use."""
    folder = ensure_demo()
    rows = _read_labels(folder)
    assert rows is not None, f"demo phantoms incomplete in {folder}"
    return (folder, [folder / rel for rel, _ in rows], [KINDS.index(k) for _, k in rows],
            list(KINDS))
