"""Video reconstruction pictures: an animated GIF and a frame-strip PNG.

Rows are samples; columns are original | masked | reconstruction | reconstruction with the
visible patches pasted back. ``stem.gif`` plays all frames of the grid; ``stem.png`` shows a few
evenly spaced frames of each column side by side (the PNG is what the logger records).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.spec import Panels
from mim.modalities.video.config import VideoDataConfig

GAP = 2  # white pixels between frames and rows
COLUMN_GAP = 8  # between the four columns of the strip
STRIP_FRAMES = 4  # frames of each column in the PNG
MIN_TILE = 96  # smaller clips are enlarged (nearest neighbour) to at least this size
FRAME_MS = 160  # GIF frame duration


def _pixels(panels: Panels, cfg: VideoDataConfig) -> np.ndarray:
    """Panels -> uint8 [4 columns, N, T, H, W, 3] in the original colours."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1, 1)
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    clips = torch.stack([(c.float() * std + mean).clamp(0, 1) for c in columns])  # [4,N,3,T,H,W]
    height = clips.shape[-2]
    zoom = max(1, -(-MIN_TILE // height))
    if zoom > 1:
        clips = clips.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    clips = clips.permute(0, 1, 3, 4, 5, 2)  # [4, N, T, H, W, 3]
    return (clips.numpy() * 255).round().astype(np.uint8)


def _grid(tiles: np.ndarray, gap: int, group_gap: int, group: int) -> np.ndarray:
    """tiles [rows, cols, H, W, 3] -> one picture; an extra gap after every ``group`` columns."""
    rows, cols, h, w, _ = tiles.shape
    lefts = [c * (w + gap) + (c // group) * (group_gap - gap) for c in range(cols)]
    canvas = np.full((rows * (h + gap) - gap, lefts[-1] + w, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            canvas[r * (h + gap):r * (h + gap) + h, lefts[c]:lefts[c] + w] = tiles[r, c]
    return canvas


def render(panels: Panels, cfg: VideoDataConfig, stem: Path) -> Path:
    pixels = _pixels(panels, cfg)  # [4, N, T, H, W, 3]
    columns, n, t = pixels.shape[:3]
    # GIF: frame k of every sample (row) and column
    frames = [Image.fromarray(_grid(pixels[:, :, k].swapaxes(0, 1), GAP, COLUMN_GAP, 1))
              for k in range(t)]
    gif = stem.with_suffix(".gif")
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
    # PNG: a few frames of each column side by side, one row per sample
    picks = np.unique(np.linspace(0, t - 1, min(STRIP_FRAMES, t)).round().astype(int))
    strip = pixels[:, :, picks]  # [4, N, F, H, W, 3]
    tiles = strip.transpose(1, 0, 2, 3, 4, 5).reshape(n, columns * len(picks),
                                                      *strip.shape[3:])
    png = stem.with_suffix(".png")
    Image.fromarray(_grid(tiles, GAP, COLUMN_GAP, len(picks))).save(png)
    return png
