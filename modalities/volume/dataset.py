"""A recursive folder of 3D volumes: .npy, .npz and (with nibabel) NIfTI; broken files skipped.

Layouts: a NumPy array is [D, H, W] (one channel) or channel-first [C, D, H, W]; an .npz holds
it under 'image', 'data' or 'arr_0' (or as its only array) with an optional 'spacing' (3 values).
A NIfTI image is reoriented to RAS and transposed to (S, A, R) = (D, H, W), so that D slices are
axial; a 4th axis holds channels ([X, Y, Z, C], or [X, Y, Z, 1, C]). Anything unusable (NaN or
Inf voxels, wrong rank, empty, truncated or not an array at all, wrong channel count, NIfTI
without nibabel) raises ``UnreadableSample``; the core replaces the item and reports path and
reason.
"""
from __future__ import annotations

import logging
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mim.data import MimDataset, UnreadableSample
from mim.data.files import file_labels, find_files
from mim.data.shards import LABELS, Member, Shards, shard_members
from mim.modalities.volume.config import VolumeDataConfig
from mim.modalities.volume.transforms import VolumeTransform

log = logging.getLogger("mim.data")

NUMPY_SUFFIXES = (".npy", ".npz")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPZ_KEYS = ("image", "data", "arr_0")
NIFTI_HINT = "NIfTI needs nibabel, which is not installed: pip install mim-pretrain[nifti]"


def is_volume_file(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and lower.endswith(NUMPY_SUFFIXES + NIFTI_SUFFIXES)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nibabel() -> Any | None:
    """The nibabel module, or None where it is not installed (the ``nifti`` extra)."""
    try:
        import nibabel as nib
    except ImportError:
        return None
    return nib


def scan(root: Path) -> list[Path]:
    files = find_files(root, is_volume_file, "volumes (.npy, .npz, .nii, .nii.gz)")
    if nibabel() is None and all(is_nifti(f) for f in files):
        raise FileNotFoundError(f"data.root: {len(files)} NIfTI files under {root}; "
                                f"{NIFTI_HINT}")
    return files


# ---------------------------------------------------------------------------------- readers
def _why(exc: BaseException) -> str:
    """An exception as one line: its type and its message with whitespace collapsed."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(6)
        if head != b"\x93NUMPY":
            raise UnreadableSample(f"not a NumPy .npy file (starts with {head!r})")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except Exception as exc:
            raise UnreadableSample(f"bad .npy header: {_why(exc)}") from exc
        offset = f.tell()
    if dtype.hasobject:
        raise UnreadableSample(f"unsupported dtype {dtype} (Python objects)")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    available = path.stat().st_size - offset
    if available < expected:
        raise UnreadableSample(f"truncated .npy: {available} of {expected} data bytes")
    return np.load(path, allow_pickle=False)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not zipfile.is_zipfile(path):
        raise UnreadableSample("not a valid .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            key = next((k for k in NPZ_KEYS if k in names), None)
            arrays = [n for n in names if n != "spacing"]
            if key is None and len(arrays) == 1:
                key = arrays[0]
            if key is None:
                raise UnreadableSample(f".npz holds {names}; expected one of "
                                       f"{', '.join(NPZ_KEYS)} or a single array")
            array = archive[key]
            spacing = archive["spacing"] if "spacing" in names else None
    except UnreadableSample:
        raise
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, EOFError, ValueError, ...
        raise UnreadableSample(f"damaged .npz: {_why(exc)}") from exc
    return array, spacing


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    nib = nibabel()
    if nib is None:
        raise UnreadableSample(NIFTI_HINT)
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))  # voxel axes -> R, A, S
        array = np.asarray(image.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except Exception as exc:  # ImageFileError, gzip / zlib errors, EOFError, ...
        raise UnreadableSample(f"damaged NIfTI: {_why(exc)}") from exc
    if array.ndim == 5 and array.shape[3] == 1:  # [X, Y, Z, 1, C] (time axis of length 1)
        array = array[:, :, :, 0]
    if array.ndim not in (3, 4):
        raise UnreadableSample(f"{array.ndim}D NIfTI of shape {array.shape}; expected "
                               "[X, Y, Z] or [X, Y, Z, C]")
    if array.ndim == 3:
        array = array[..., None]
    array = array.transpose(3, 2, 1, 0)  # [C, Z, Y, X] = [C, D, H, W]
    return array, np.array(zooms[::-1])


def _spacing(value: np.ndarray | None) -> tuple[float, float, float]:
    if value is None:
        return (1.0, 1.0, 1.0)
    spacing = np.asarray(value, dtype=np.float64).reshape(-1)
    if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise UnreadableSample(f"bad spacing {value.tolist()}; expected three values > 0")
    return tuple(float(s) for s in spacing)


def read_volume(path: Path, channels: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One file -> (float32 [C, D, H, W], spacing (D, H, W)); UnreadableSample if unusable."""
    if path.stat().st_size == 0:
        raise UnreadableSample("empty file (0 bytes)", "empty")
    spacing = None
    try:
        if is_nifti(path):
            array, spacing = _read_nifti(path)
        elif path.suffix.lower() == ".npz":
            array, spacing = _read_npz(path)
        else:
            array = _read_npy(path)
    except (UnreadableSample, OSError):
        raise
    except Exception as exc:  # a reader's unexpected complaint is still only this file's
        raise UnreadableSample(_why(exc)) from exc
    spacing = _spacing(spacing)
    if array.dtype.kind not in "biuf":
        raise UnreadableSample(f"unsupported dtype {array.dtype}; expected numbers")
    if array.ndim not in (3, 4):
        raise UnreadableSample(f"{array.ndim}D array of shape {array.shape}; expected "
                               "[D, H, W] or channel-first [C, D, H, W]")
    if array.size == 0:
        raise UnreadableSample(f"empty array of shape {array.shape}")
    if array.ndim == 3:
        array = array[None]
    if array.shape[0] != channels:
        raise UnreadableSample(f"{array.shape[0]} channels (array shape {array.shape}, read as "
                               f"[C, D, H, W]) but data.channels is {channels}")
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        nan = int(np.isnan(array).sum())
        what = "NaN" if nan else "Inf"
        raise UnreadableSample(f"contains {what} ({array.size - int(finite.sum())} of "
                               f"{array.size} voxels not finite)", "NaN or Inf voxels")
    return array, spacing


# ---------------------------------------------------------------------------------- dataset
class VolumeDataset(MimDataset):
    def __init__(self, files: list[Path | Member], labels: list[int], transform: VolumeTransform,
                 channels: int, classes: list[str] | None = None, shards: Shards | None = None):
        """``shards``: the shards the files are members of (data.format=wds)."""
        self.files, self.labels, self.transform = files, labels, transform
        self.channels = channels
        self.classes = classes or []
        self.shards = shards

    def identity(self) -> dict:
        return super().identity() if self.shards is None else self.shards.identity(len(self))

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        file = self.files[index]  # a shard member is read from a temporary copy
        with file.local() if isinstance(file, Member) else nullcontext(file) as path:
            volume, spacing = read_volume(path, self.channels)
        return self.transform(volume, spacing, seed), self.labels[index]


def build_dataset(cfg: VolumeDataConfig) -> VolumeDataset:
    if cfg.format == "wds":  # labels are read only where asked for (data.labels=shards)
        members, shards = shard_members(str(cfg.root), is_volume_file, "volume")
        labels, classes = (shards.labels([m.item for m in members]) if cfg.labels == LABELS
                           else ([-1] * len(members), []))
        log.info("volume data: %d items in the shards of %s%s", len(members), cfg.root,
                 f" ({shards.damaged} damaged)" if shards.damaged else "")
        return VolumeDataset(members, labels, VolumeTransform(cfg), cfg.channels, classes,
                             shards)
    if cfg.root:
        root = Path(cfg.root).expanduser()
        files = scan(root)
        labels, classes = file_labels(files, root, cfg.labels)
    else:
        from mim.modalities.volume.demo import demo_files, segment_images

        root, files, labels, classes = (demo_files() if cfg.demo == "phantoms"
                                        else segment_images())
    if nibabel() is None and any(is_nifti(f) for f in files):
        log.warning("volume data: %d NIfTI files will be skipped; %s",
                    sum(is_nifti(f) for f in files), NIFTI_HINT)
    log.info("volume data: %d files under %s%s", len(files), root,
             "" if cfg.root else f" (built-in demo: {cfg.demo})")
    return VolumeDataset(files, labels, VolumeTransform(cfg), cfg.channels, classes)
