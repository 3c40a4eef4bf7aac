"""Image reconstruction pictures: one row per sample, columns original | masked |
reconstruction | reconstruction with visible patches pasted, as a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mim.spec import Panels
from mim.modalities.image.config import ImageDataConfig

GAP = 2  # white pixels between tiles


def render(panels: Panels, cfg: ImageDataConfig, stem: Path) -> Path:
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    tiles = [(c * std + mean).clamp(0, 1) for c in columns]  # each [N, 3, H, W]
    n, _, h, w = tiles[0].shape
    canvas = torch.ones(3, n * (h + GAP) - GAP, len(tiles) * (w + GAP) - GAP)
    for col, tile in enumerate(tiles):
        for row in range(n):
            top, left = row * (h + GAP), col * (w + GAP)
            canvas[:, top:top + h, left:left + w] = tile[row]
    pixels = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H, W, 3]
    path = stem.with_suffix(".png")
    Image.fromarray(pixels).save(path)
    return path
