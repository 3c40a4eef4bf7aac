"""Image reconstruction pictures: one row per sample, columns original | masked |
reconstruction | reconstruction with visible patches pasted, as a PNG.

Photos are shown as they were read. A raster (any band count) is shown as a false-colour
composite of three bands (``composite_bands``: the red, green and blue bands where the names say
which, else the first three), each stretched between its 2nd and 98th percentile over the
originals, no data black; ``<stem>-bands.png`` beside it is the per-band montage: for each
sample a row of its original bands over a row of their pasted reconstruction. A time stack
gets a row per date.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from mim.eval.segment.pictures import colour, overlay
from mim.spec import Panels
from mim.modalities.image.bands import run_band_names
from mim.modalities.image.config import ImageDataConfig, photo_stats

GAP = 2  # white pixels between tiles
# band names of red, green and blue, by sensor: photos, Sentinel-2, Landsat 8/9, HLS / Prithvi
RGB_NAMES = (("red", "green", "blue"), ("B04", "B03", "B02"), ("B4", "B3", "B2"),
             ("RED", "GREEN", "BLUE"))


def composite_bands(names: list[str], chosen: list | None = None) -> list[int]:
    """The three bands a false-colour composite shows (indices into ``names``, the sample's
    bands): ``chosen`` (``data.composite``, names or indices), else by their names."""
    if chosen:
        return [names.index(b) if isinstance(b, str) else int(b) for b in chosen]
    for rgb in RGB_NAMES:
        if all(n in names for n in rgb):
            return [names.index(n) for n in rgb]
    return [min(i, len(names) - 1) for i in range(3)]


def _grid(tiles: list[torch.Tensor]) -> np.ndarray:
    """tiles [N, 3, H, W] in [0, 1] per column -> uint8 [rows, columns, 3] with white gaps."""
    n, _, h, w = tiles[0].shape
    canvas = torch.ones(3, n * (h + GAP) - GAP, len(tiles) * (w + GAP) - GAP)
    for col, tile in enumerate(tiles):
        for row in range(n):
            top, left = row * (h + GAP), col * (w + GAP)
            canvas[:, top:top + h, left:left + w] = tile[row]
    return (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H, W, 3]


def _denormalised(panels: Panels, cfg: ImageDataConfig) -> list[torch.Tensor]:
    mean, std = photo_stats(cfg) if cfg.reader != "raster" else (cfg.mean, cfg.std)
    mean = torch.tensor(mean, dtype=torch.float32)  # [C]
    std = torch.tensor(std, dtype=torch.float32)
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    shape = (1, -1) + (1,) * (columns[0].dim() - 2)  # [1, C, 1, ...]
    return [c * std.view(shape) + mean.view(shape) for c in columns]  # the file's units / scale


def _stretch(columns: list[torch.Tensor], bands: list[int]) -> list[torch.Tensor]:
    """The bands of every column mapped to [0, 1] by the originals' 2-98 percentiles; NaN 0."""
    picked = [c[:, bands] for c in columns]  # each [N, 3, H, W]
    values = picked[0].transpose(0, 1).reshape(3, -1)  # [3, N*H*W]
    low = torch.nanquantile(values, 0.02, dim=1).view(1, 3, 1, 1)
    high = torch.nanquantile(values, 0.98, dim=1).view(1, 3, 1, 1)
    span = (high - low).clamp(min=1e-12)
    return [((c - low) / span).nan_to_num(0.0).clamp(0, 1) for c in picked]


def _montage(columns: list[torch.Tensor], stem: Path) -> None:
    """Each band alone in gray: per sample, the original bands over the pasted ones."""
    original, pasted = columns[0], columns[3]  # [N, C, H, W]
    n, c = original.shape[:2]
    tiles = []
    for band in range(c):
        pair = _stretch([original, pasted], [band] * 3)  # each [N, 3, H, W], gray
        tiles.append(torch.stack(pair, 1).flatten(0, 1))  # [2N, 3, H, W]: rows alternate
    Image.fromarray(_grid(tiles)).save(stem.with_name(f"{stem.name}-bands.png"))


def render(panels: Panels, cfg: ImageDataConfig, stem: Path) -> Path:
    columns = _denormalised(panels, cfg)
    if columns[0].dim() == 5:  # time stacks: one row per sample and date
        columns = [rearrange(c, "n c t h w -> (n t) c h w") for c in columns]
    path = stem.with_suffix(".png")
    if cfg.reader != "raster":
        tiles = [c.clamp(0, 1) for c in columns]  # each [N, 3, H, W]
    else:
        tiles = _stretch(columns, composite_bands(run_band_names(cfg), cfg.composite))
        _montage(columns, stem)
    Image.fromarray(_grid(tiles)).save(path)
    return path


def render_segmentation(cfg: ImageDataConfig, x: torch.Tensor, label: torch.Tensor,
                        pred: torch.Tensor, classes: list[str], stem: Path) -> Path:
    """image | ground truth | prediction of one held-out image (x [C, H, W] normalised, or a
    time stack [C, T, H, W]: its last date; label and pred [H, W]), the label colours over the
    picture."""
    x = x[:, -1] if x.dim() == 4 else x  # [C, H, W]
    mean, std = photo_stats(cfg) if cfg.reader != "raster" else (cfg.mean, cfg.std)
    shape = (-1, 1, 1)
    values = x * torch.tensor(std, dtype=torch.float32).view(shape) + torch.tensor(
        mean, dtype=torch.float32).view(shape)  # [C, H, W] in the file's units / scale
    if cfg.reader == "raster":
        rgb = _stretch([values[None]], composite_bands(run_band_names(cfg), cfg.composite))[0][0]
    else:
        rgb = values.clamp(0, 1)
    picture = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H, W, 3]
    tiles = [picture, overlay(picture, colour(label, len(classes))),
             overlay(picture, colour(pred, len(classes)))]
    gap = np.full((picture.shape[0], GAP, 3), 255, np.uint8)
    path = stem.with_suffix(".png")
    Image.fromarray(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)).save(path)
    return path
