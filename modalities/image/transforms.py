"""MAE's pretraining augmentation, seeded per sample: RandomResizedCrop + flip + normalise.

MAE (Appendix A.1): RandomResizedCrop(scale=(0.2, 1.0), bicubic) and a horizontal flip, nothing
else. The crop box follows torchvision's sampling rule; the randomness comes from the sample's
own seed (not a global RNG), so a resumed run sees exactly the same crops.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

from mim.modalities.image.config import ImageDataConfig


def crop_box(width: int, height: int, scale: tuple[float, float],
             ratio: tuple[float, float], rng: random.Random) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop of area ``scale`` and aspect ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    # fallback: the largest centre crop within the ratio range
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class PretrainTransform:
    def __init__(self, cfg: ImageDataConfig):
        self.size = cfg.input_size
        self.scale = (cfg.min_scale, cfg.max_scale)
        self.hflip = cfg.hflip
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def __call__(self, image: Image.Image, seed: int) -> torch.Tensor:
        """RGB PIL image -> normalised tensor [3, size, size]."""
        return self.normalise(self.crop_flip(image, random.Random(seed)))

    def crop_flip(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """The random resized crop (bicubic) and the flip, drawn from ``rng``."""
        box = crop_box(image.width, image.height, self.scale, (3 / 4, 4 / 3), rng)
        image = image.resize((self.size, self.size), Image.BICUBIC, box=box)
        if rng.random() < self.hflip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image

    def normalise(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``(pixels / 255 - mean) / std`` [3, H, W]."""
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # [H, W, 3]
        x = pixels.permute(2, 0, 1).float().div_(255.0)  # [3, H, W]
        return (x - self.mean) / self.std


class CentreTransform:
    """The test view (timm / MAE evaluation): the short side resized to ``input_size /
    crop_pct`` (bicubic), the centre ``input_size`` square cropped, normalised. No randomness."""

    def __init__(self, cfg: ImageDataConfig, crop_pct: float = 1.0):
        self.size = cfg.input_size
        self.resize = max(self.size, round(self.size / crop_pct))
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def __call__(self, image: Image.Image, seed: int = 0) -> torch.Tensor:
        """RGB PIL image -> normalised tensor [3, size, size] (``seed`` is unused)."""
        scale = self.resize / min(image.width, image.height)
        width, height = max(self.size, round(image.width * scale)), max(
            self.size, round(image.height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # [H, W, 3]
        x = pixels.permute(2, 0, 1).float().div_(255.0)  # [3, H, W]
        return (x - self.mean) / self.std
