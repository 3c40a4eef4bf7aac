"""Volumes with voxel labels for ``mim eval segment``: the Medical Segmentation Decathlon's
layout.

``data.root`` holds ``imagesTr/`` and ``labelsTr/`` (NIfTI, .npy or .npz; a label the same
shape and spacing as its image), with ``dataset.json`` read where present: its ``training``
list of ``{"image", "label"}`` pairs (a listed file that is missing is left out, counted and
named) and its ``labels`` (class names by id). Without it, images and labels pair by name.
``data.labels=<list file>`` of ``image,label`` lines is read instead where given. The
Decathlon has no validation split: ``data.val_fraction`` of the pairs is held out (seeded by
``data.split_seed``). Images are resampled to ``data.target_spacing`` (trilinear; labels
nearest) and normalised as in pretraining (``transforms.py``), whole; the core crops
(``mim/data/segmentation.py``: half the crops centred on a labelled voxel, as MONAI's
``RandCropByPosNegLabel`` 1:1) and flips. Without ``data.root``: the demo phantoms with their
label maps (``demo.py``).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mim.data.dataset import UnreadableSample
from mim.data.segmentation import SegmentItems, SegmentRules, pair_by_stem, scan, split_pairs
from mim.modalities.volume import demo
from mim.modalities.volume.dataset import is_nifti, nibabel, read_volume, scan as scan_volumes
from mim.modalities.volume.labelled import VolumeEvalDataConfig
from mim.modalities.volume.pictures import render_segmentation
from mim.modalities.volume.transforms import normalise, resample
from mim.spec import SegmentData

log = logging.getLogger("mim.data")


def decathlon_root(cfg: VolumeEvalDataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else demo.decathlon_folder()


def _listed(root: Path, entries: list[tuple[str, str]], where: str) -> list[tuple[Path, Path]]:
    pairs, missing = [], []
    for image, label in entries:
        pair = (root / image, root / label)
        (pairs if pair[0].is_file() and pair[1].is_file() else missing).append(pair)
    if missing:
        first = next(p for p in missing[0] if not p.is_file())
        log.warning("%s: %d listed pairs with a missing file left out (first: %s)", where,
                    len(missing), first)
    return pairs


def _list_file(root: Path, path: str) -> list[tuple[Path, Path]]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data.labels: {file} is not a file")
    entries = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != 2:
                raise ValueError(f"data.labels: line {number} of {file} is not 'image,label'")
            entries.append((cells[0], cells[1]))
    return _listed(root, entries, "data.labels")


def read_manifest(root: Path) -> dict | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"data.root: {path} is not JSON ({exc})") from None


def pairs_of(cfg: VolumeEvalDataConfig, root: Path, manifest: dict | None
             ) -> list[tuple[Path, Path]]:
    if cfg.labels != "folders":
        return _list_file(root, cfg.labels)
    if manifest is not None and manifest.get("training"):
        entries = [(e["image"], e["label"]) for e in manifest["training"]]
        return _listed(root, entries, f"{root / 'dataset.json'}")
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise FileNotFoundError(f"data.root: {root} has no imagesTr/ and labelsTr/ (the "
                                "Medical Segmentation Decathlon's layout); or give "
                                "data.labels=<a file of image,label lines>")
    return pair_by_stem(scan_volumes(images), scan_volumes(labels), str(images))


def class_names(manifest: dict | None) -> list[str] | None:
    labels = (manifest or {}).get("labels")
    if not isinstance(labels, dict):
        return None
    ids = sorted(int(k) for k in labels)
    if ids != list(range(len(ids))):
        raise ValueError(f"dataset.json: labels ids {ids} are not 0, 1, ... in order")
    return [str(labels[str(i)]) for i in ids]


def read_label(path: Path) -> np.ndarray:
    """A label volume's class ids [D, H, W]."""
    values, _ = read_volume(path, 1)
    ids = values[0]
    if not np.array_equal(ids, np.round(ids)):
        raise UnreadableSample("label values that are not whole numbers", "not class ids")
    return ids.astype(np.int64)


def _same_spacing(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a, b))


def header(path: Path, channels: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A volume's (D, H, W) and spacing as ``read_volume`` gives them, from a NIfTI's header
    (its axes reoriented to RAS as the reader does) or a .npy's, without its voxels."""
    nib = nibabel()
    if nib is not None and is_nifti(path):
        image = nib.load(str(path))
        axes = nib.orientations.io_orientation(image.affine)[:, 0].astype(int)  # RAS <- file
        shape = tuple(int(image.shape[a]) for a in axes)[::-1]  # (Z, Y, X) = (D, H, W)
        zooms = image.header.get_zooms()
        return shape, tuple(float(zooms[a]) for a in axes)[::-1]
    if path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(array.shape[-3:]), (1.0, 1.0, 1.0)
    volume, spacing = read_volume(path, channels)
    return tuple(volume.shape[1:]), tuple(spacing)


class Reader:
    """(image, label) -> (x [C, D, H, W] resampled and normalised, ids [D, H, W])."""

    def __init__(self, cfg: VolumeEvalDataConfig):
        self.cfg = cfg

    def check(self, image: Path, label: Path) -> None:
        """A label of another shape or spacing than its image -> ``UnreadableSample``."""
        (shape, spacing), (label_shape, label_spacing) = (header(image, self.cfg.channels),
                                                          header(label, 1))
        if shape != label_shape or not _same_spacing(spacing, label_spacing):
            raise UnreadableSample(
                f"image {list(shape)} at {[round(s, 4) for s in spacing]}, label "
                f"{list(label_shape)} at {[round(s, 4) for s in label_spacing]}",
                "volume and label of other shapes or spacings")

    def __call__(self, image: Path, label: Path) -> tuple[torch.Tensor, np.ndarray]:
        volume, spacing = read_volume(image, self.cfg.channels)
        ids, label_spacing = read_volume(label, 1)
        if ids.shape[1:] != volume.shape[1:] or not _same_spacing(spacing, label_spacing):
            raise UnreadableSample(
                f"image {list(volume.shape[1:])} at {list(spacing)}, label "
                f"{list(ids.shape[1:])} at {list(label_spacing)}",
                "volume and label of other shapes or spacings")
        target = self.cfg.target_spacing
        if target is not None:
            volume = resample(volume, spacing, target)
            size = tuple(volume.shape[1:])
            ids = F.interpolate(torch.from_numpy(ids)[None], size=size,
                                mode="nearest-exact")[0].numpy()
        x = torch.from_numpy(np.ascontiguousarray(normalise(volume, self.cfg), np.float32))
        return x, ids[0].round().astype(np.int64)


def resolve_segment(cfg: VolumeEvalDataConfig) -> VolumeEvalDataConfig:
    return cfg  # volumes decide nothing from their files


def segmentation(cfg: VolumeEvalDataConfig, rules: SegmentRules) -> SegmentData:
    root = decathlon_root(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    manifest = read_manifest(root)
    read = Reader(cfg)
    train, val = split_pairs(pairs_of(cfg, root, manifest), cfg.val_fraction, cfg.split_seed)
    names = class_names(manifest)

    kept = [scan(pairs, read_label, lambda p: header(p, cfg.channels)[0], rules, names, where,
                 read.check, key=f"volume channels={cfg.channels}")
            for pairs, where in ((train, "training pairs"), (val, "held-out pairs"))]
    count = max(k.num_classes for k in kept)
    names = names or [f"class_{i}" for i in range(count)]
    log.info("segmentation: %d training, %d held-out volumes, %d classes, from %s%s",
             len(kept[0].pairs), len(kept[1].pairs), count, root,
             "" if cfg.root else " (built-in demo phantoms)")
    return SegmentData(SegmentItems(kept[0].pairs, read, rules),
                       SegmentItems(kept[1].pairs, read, rules), names, rank=3,
                       flips=tuple(cfg.flip), scale=(1.0, 1.0), foreground=0.5,
                       render=lambda *a: render_segmentation(cfg, *a))
