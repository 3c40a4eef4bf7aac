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

Segmentation (``decathlon_folder()``, for ``mim eval segment`` without a root): 32 labelled
phantoms of their own (``labelled_phantom``; 28 with labels, 4 test volumes), in the Medical
Segmentation Decathlon's layout, in
``$MIM_CACHE_DIR/demo_volume/decathlon/<DECATHLON_VERSION>/``::

    dataset.json                  MSD's: name, description, modality {"0": "CT"}, labels
                                  {"0": "background", "1": "organ", "2": "vessel", "3": "lesion"},
                                  numTraining, numTest, training [{"image": "./imagesTr/...",
                                  "label": "./labelsTr/..."}], test ["./imagesTs/...", ...]
    imagesTr/phantom_XXX.nii.gz   DECATHLON_TRAINING volumes, int16 (HU-like, -1000 .. 1000)
    labelsTr/phantom_XXX.nii.gz   their labels, uint8, same shape and affine
    imagesTs/phantom_XXX.nii.gz   DECATHLON_TEST volumes without labels

A labelled phantom is a body (label 0 with the air around it) holding 1-2 organs (1,
ellipsoids), 1-3 lesions inside an organ (3) and 1-3 vessels (2, straight tubes crossing organs
and lesions), every voxel labelled by the structure whose (hard) surface encloses it, the image
drawn with the demo's soft edges and noise. A structure is told by its texture, not its
brightness (version 2; in version 1 the structures differed in brightness, which a random
encoder passes on as well as a pretrained one): the body's tissue is mottled (blobs of about 5
mm), an organ layered (a plane wave of period 4-7 mm), a vessel beaded along its axis (period
3-5 mm), a lesion grainy (noise at the voxel scale), every texture of the same contrast and
every region's mean drawn from one range, so intensity alone tells organ, vessel and lesion
apart no better than chance (tested). Every side is drawn from 32..48 voxels (mostly not
multiples of 16; never all three equal) and one volume in three has 1.5 mm slices (spacing 1.5 x
1 x 1). The NIfTI files hold [X, Y, Z] = [W, H, D] with a diagonal RAS affine of the spacing (so
the readers' canonical view is [D, H, W] again), qform and sform code 1, millimetres, gzip with
no timestamp: the files are byte-identical for the same NumPy, SciPy, nibabel and zlib. Without
nibabel the same volumes are written as .npz (``image``, ``spacing``) into
``<DECATHLON_VERSION>-npz/``. The set is written once into a temporary sibling and published by
an atomic rename (a concurrent writer may win); writing it (32 volumes and 28 label maps, 2.5
MB) took 0.83 s (version 1) on one core (``taskset -c 0``, best of three on a busy machine) of
an "Intel(R) Xeon(R) Processor @ 2.80GHz" (lscpu's model name).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from mim.data.cache import cache_root, written_once

log = logging.getLogger("mim.data")

VERSION = "v1"
SEED = 20240917
COUNT = 24
KINDS = ("ellipsoids", "tubes", "textured")
LABELS_FILE = "labels.csv"

# the labelled phantoms of the segmentation demo (decathlon_folder)
DECATHLON_VERSION = "v2"
DECATHLON_SEED = 20250612
DECATHLON_TRAINING = 28
DECATHLON_TEST = 4
SEGMENT_LABELS = ("background", "organ", "vessel", "lesion")
# every region's mean intensity is drawn from MEANS (air 0, then * 2000 - 1000 HU); its texture
# (std 1) is added at TEXTURE: the labels follow texture, not brightness
MEANS = (0.36, 0.46)
TEXTURE = 0.06


def cache_dir() -> Path:
    return cache_root() / "demo_volume" / VERSION


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


def _ellipsoid_distance(xyz, centre, axes, rotation) -> np.ndarray:
    """The ellipsoid's normalised radius at every voxel: < 1 inside. [D, H, W]"""
    local = np.einsum("ij,j...->i...", rotation, xyz - np.reshape(centre, (3, 1, 1, 1)))
    return np.sqrt(sum((local[k] / axes[k]) ** 2 for k in range(3)))


def _ellipsoid(xyz, centre, axes, rotation) -> np.ndarray:
    return _soft(_ellipsoid_distance(xyz, centre, axes, rotation))


def _tube_distance(xyz, point, direction, radius) -> np.ndarray:
    """The distance from the tube's axis in radii at every voxel: < 1 inside. [D, H, W]"""
    rel = xyz - np.reshape(point, (3, 1, 1, 1))
    along = np.einsum("i,i...->...", direction, rel)
    perp = rel - direction.reshape(3, 1, 1, 1) * along
    return np.sqrt((perp ** 2).sum(0)) / radius


def _tube(xyz, point, direction, radius) -> np.ndarray:
    return _soft(_tube_distance(xyz, point, direction, radius))


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


# -- the segmentation demo: labelled phantoms in the Medical Segmentation Decathlon's layout ------
def _labelled_layout(rng: np.random.Generator, index: int) -> tuple[tuple[int, int, int],
                                                                      tuple[float, float, float]]:
    """(shape, spacing) of labelled phantom ``index``: sides in 32..48, never all equal."""
    shape = tuple(int(n) for n in rng.integers(32, 49, 3))
    if len(set(shape)) == 1:
        shape = (shape[0], shape[1], 80 - shape[2])
    spacing = (1.5, 1.0, 1.0) if index % 3 == 2 else (1.0, 1.0, 1.0)
    return shape, spacing


def _unit(texture: np.ndarray) -> np.ndarray:
    """``texture`` shifted and scaled to mean 0 and standard deviation 1."""
    return (texture - texture.mean()) / (texture.std() + 1e-6)


def _textures(rng: np.random.Generator, shape, spacing) -> dict[str, np.ndarray]:
    """The four textures of a labelled phantom, each of mean 0 and std 1 over the volume:
    ``mottle`` (smoothed noise, blobs of about 5 mm), ``layers`` (a plane wave of period 4-7 mm
    in a random direction), ``beads`` (filled in per vessel, along its axis) and ``grain``
    (noise at the voxel scale). [D, H, W] each."""
    sigma = lambda mm: mm / np.asarray(spacing)  # noqa: E731
    normal = lambda: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    mm = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)],
                              indexing="ij")).astype(np.float32)  # [3, D, H, W]
    direction = _rotation(rng)[0]
    phase = np.einsum("i,i...->...", direction, mm) / rng.uniform(4.0, 7.0)
    return {"mottle": _unit(gaussian_filter(normal(), sigma(2.5))),
            "layers": _unit(np.cos(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))),
            "grain": _unit(gaussian_filter(normal(), sigma(0.5))),
            "mm": mm}


def labelled_phantom(index: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Labelled phantom ``index`` of the segmentation demo: (HU-like int16 [D, H, W]; labels,
    uint8 [D, H, W], indices into ``SEGMENT_LABELS``; spacing (D, H, W) in mm).

    A structure is told by its TEXTURE, not its brightness: the body's tissue is ``mottle``,
    an organ ``layers``, a vessel ``beads`` along its axis, a lesion ``grain``, all of the same
    contrast (``TEXTURE``), and every region's mean is drawn from the same range
    (``MEANS``), so the intensity of a voxel says little about its label."""
    rng = np.random.default_rng([DECATHLON_SEED, index])
    shape, spacing = _labelled_layout(rng, index)
    xyz = _coords(shape, spacing)
    texture = _textures(rng, shape, spacing)
    labels = np.zeros(shape, np.uint8)
    body_axes = rng.uniform(0.75, 0.95, 3)
    body_distance = _ellipsoid_distance(xyz, rng.uniform(-0.05, 0.05, 3), body_axes,
                                        _rotation(rng))
    body, in_body = _soft(body_distance), body_distance < 1.0
    volume = body * (rng.uniform(*MEANS) + TEXTURE * texture["mottle"])

    def paint(soft: np.ndarray, value) -> None:
        nonlocal volume
        volume = volume * (1.0 - soft) + value * soft

    organs = []
    for _ in range(rng.integers(1, 3)):  # 1-2 layered organs
        centre = rng.uniform(-0.25, 0.25, 3) * body_axes
        axes, rotation = rng.uniform(0.45, 0.7, 3), _rotation(rng)
        distance = _ellipsoid_distance(xyz, centre, axes, rotation)
        paint(body * _soft(distance), rng.uniform(*MEANS) + TEXTURE * texture["layers"])
        labels[in_body & (distance < 1.0)] = 1
        organs.append((centre, axes, rotation, distance))
    for _ in range(rng.integers(1, 4)):  # 1-3 grainy lesions, each inside an organ
        centre, axes, rotation, organ = organs[int(rng.integers(len(organs)))]
        offset = rotation.T @ (rng.uniform(-0.45, 0.45, 3) * axes).astype(np.float32)
        distance = _ellipsoid_distance(xyz, centre + offset, rng.uniform(0.15, 0.28, 3),
                                       _rotation(rng))
        inside = organ < 1.0
        paint(body * _soft(organ) * _soft(distance),
              rng.uniform(*MEANS) + TEXTURE * texture["grain"])
        labels[in_body & inside & (distance < 1.0)] = 3
    for _ in range(rng.integers(1, 4)):  # 1-3 beaded vessels
        direction = rng.normal(size=3).astype(np.float32)
        direction /= np.linalg.norm(direction)
        distance = _tube_distance(xyz, rng.uniform(-0.4, 0.4, 3) * body_axes, direction,
                                  rng.uniform(0.1, 0.16))
        along = np.einsum("i,i...->...", direction, texture["mm"]) / rng.uniform(3.0, 5.0)
        beads = _unit(np.cos(2 * np.pi * along))
        paint(body * _soft(distance), rng.uniform(*MEANS) + TEXTURE * beads)
        labels[in_body & (distance < 1.0)] = 2
    volume = volume + rng.normal(0.0, 0.015, shape).astype(np.float32)
    hu = np.clip(np.rint(volume * 2000.0 - 1000.0), -1024, 3071).astype(np.int16)
    return hu, labels, spacing


def _nifti_bytes(nib, array: np.ndarray, spacing) -> bytes:
    """[D, H, W] -> a gzipped NIfTI-1 of [X, Y, Z] = [W, H, D], diagonal RAS affine, no
    timestamp in the gzip header."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)


def decathlon_dir() -> Path:
    """``$MIM_CACHE_DIR/demo_volume/decathlon`` (default ``~/.cache/mim``)."""
    return cache_dir().parent / "decathlon"


def _write_decathlon(root: Path, nib) -> None:
    suffix = ".nii.gz" if nib is not None else ".npz"
    for part in ("imagesTr", "labelsTr", "imagesTs"):
        (root / part).mkdir(parents=True)
    training, test = [], []
    for index in range(DECATHLON_TRAINING + DECATHLON_TEST):
        volume, labels, spacing = labelled_phantom(index)
        name = f"phantom_{index:03d}{suffix}"
        arrays = [(volume, "imagesTr" if index < DECATHLON_TRAINING else "imagesTs")]
        if index < DECATHLON_TRAINING:
            arrays.append((labels, "labelsTr"))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
        for array, part in arrays:
            data = (_nifti_bytes(nib, array, spacing) if nib is not None
                    else _encode(array, spacing, ".npz"))
            (root / part / name).write_bytes(data)
    dataset = {
        "name": "Phantoms",
        "description": "mim's built-in segmentation demo: procedural phantoms with organs, "
                       "lesions and vessels",
        "reference": "mim (procedural, modalities/volume/demo.py)",
        "licence": "CC0",
        "release": DECATHLON_VERSION,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): name for k, name in enumerate(SEGMENT_LABELS)},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=4) + "\n")


def decathlon_folder() -> Path:
    """The segmentation demo's version folder in the Medical Segmentation Decathlon's layout
    (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``), written on first use."""
    try:
        import nibabel as nib
    except ImportError:
        nib = None
    folder = decathlon_dir() / (DECATHLON_VERSION if nib is not None
                                else f"{DECATHLON_VERSION}-npz")
    return written_once(folder, lambda root: _write_decathlon(root, nib),
                        f"volume demo: wrote {DECATHLON_TRAINING + DECATHLON_TEST} labelled "
                        "phantoms")


def segment_images() -> tuple[Path, list[Path], list[int], list[str]]:
    """(root, files, labels, classes) of ``data.demo=segment``: every image of the labelled
    phantoms (training and test; their labels are not read), unlabelled (-1)."""
    folder = decathlon_folder()
    files = sorted(p for part in ("imagesTr", "imagesTs") for p in (folder / part).iterdir()
                   if not p.name.startswith("."))
    return folder, files, [-1] * len(files), []
