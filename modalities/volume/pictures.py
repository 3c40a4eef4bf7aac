"""Volume reconstruction pictures: a grayscale PNG montage of centre slices.

For each sample three rows (axial: the centre D slice [H, W]; coronal: the centre H slice
[D, W]; sagittal: the centre W slice [D, H]) by four columns (original | masked |
reconstruction | reconstruction with the visible cubes pasted back). Channel 0 is shown. All
tiles of a sample share one display range (the 0.5-99.5 percentiles of its original), so the
columns are comparable; small volumes are enlarged (nearest neighbour) to at least 96 pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.eval.segment.pictures import colour, overlay
from mim.modalities.volume.config import VolumeDataConfig
from mim.spec import Panels

GAP = 2  # pixels between tiles
SAMPLE_GAP = 8  # extra pixels between samples
MIN_TILE = 96  # enlarge tiles to at least this many pixels on their shorter side
BACKGROUND = 255


def centre_slices(volume: np.ndarray) -> list[np.ndarray]:
    """[D, H, W] -> axial [H, W], coronal [D, W], sagittal [D, H] centre slices."""
    d, h, w = volume.shape
    return [volume[d // 2], volume[:, h // 2], volume[:, :, w // 2]]


def _display_range(volume: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(volume, [0.5, 99.5])
    if high - low < 1e-6:
        low, high = float(volume.min()), float(volume.max())
    return float(low), float(max(high, low + 1e-6))


def render(panels: Panels, cfg: VolumeDataConfig, stem: Path) -> Path:
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    columns = [c[:, 0].float().numpy() for c in columns]  # each [N, D, H, W], channel 0
    n, d, h, w = columns[0].shape
    scale = max(1, -(-MIN_TILE // min(d, h, w)))  # ceil: enlarge small volumes
    tile_h, tile_w = max(d, h) * scale, max(h, w) * scale  # a cell fits any of the 3 views
    rows = n * 3
    height = rows * (tile_h + GAP) - GAP + (n - 1) * SAMPLE_GAP
    width = len(columns) * (tile_w + GAP) - GAP
    canvas = np.full((height, width), BACKGROUND, dtype=np.uint8)
    for i in range(n):
        low, high = _display_range(columns[0][i])
        for col, column in enumerate(columns):
            for view, plane in enumerate(centre_slices(column[i])):
                pixels = np.clip((plane - low) / (high - low), 0.0, 1.0)
                pixels = (pixels * 255.0).round().astype(np.uint8)
                pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
                top = (i * 3 + view) * (tile_h + GAP) + i * SAMPLE_GAP
                top += (tile_h - pixels.shape[0]) // 2
                left = col * (tile_w + GAP) + (tile_w - pixels.shape[1]) // 2
                canvas[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    path = stem.with_suffix(".png")
    Image.fromarray(canvas).save(path)  # uint8 [H, W] -> mode L
    return path


def _tile(plane: np.ndarray, scale: int) -> np.ndarray:
    return plane.repeat(scale, axis=0).repeat(scale, axis=1)


def render_segmentation(cfg: VolumeDataConfig, x: torch.Tensor, label: torch.Tensor,
                        pred: torch.Tensor, classes: list[str], stem: Path) -> Path:
    """Three rows (the axial, coronal and sagittal centre slices) of volume | ground truth |
    prediction, the label colours over channel 0 of x [C, D, H, W]."""
    volume = x[0].float().numpy()  # [D, H, W]
    low, high = _display_range(volume)
    scale = max(1, -(-MIN_TILE // min(volume.shape)))
    rows = []
    for plane, truth, guess in zip(centre_slices(volume), centre_slices(label),
                                   centre_slices(pred)):
        gray = (np.clip((plane - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
        picture = np.repeat(gray[..., None], 3, axis=-1)  # [h, w, 3]
        tiles = [picture, overlay(picture, colour(torch.as_tensor(truth), len(classes))),
                 overlay(picture, colour(torch.as_tensor(guess), len(classes)))]
        gap = np.full((picture.shape[0], GAP, 3), BACKGROUND, np.uint8)
        rows.append(_tile(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1),
                          scale))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=BACKGROUND)
            for r in rows]
    path = stem.with_suffix(".png")
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
