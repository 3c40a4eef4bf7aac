"""MAE's pretraining augmentation, seeded per sample: RandomResizedCrop + flip + normalise.

MAE (Appendix A.1): RandomResizedCrop(scale=(0.2, 1.0), bicubic) and a horizontal flip, nothing
else. The crop box follows torchvision's sampling rule on the file's full size (read from the
header, before decoding); the randomness comes from the sample's own seed (not a global RNG), so
a resumed run sees exactly the same crops.

Speed (bench/pipeline.py): a JPEG whose crop shrinks by 2x or more beyond ``REDUCE_MARGIN`` is
decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled decoding, PIL's
``draft``), and the crop is resized by torch's antialiased bicubic (PIL's filter, SIMD on a
[C, h, w] uint8 tensor) rather than PIL's resize, several times slower on one core.
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mim.modalities.image.config import ImageDataConfig

# a reduced decode keeps at least this many pixels per output pixel on the crop's short side:
# PIL's own default (``Image.thumbnail``'s reducing_gap); the crop's PSNR against a full decode
# stays above 35 dB (tests/unit/test_image_pipeline.py)
REDUCE_MARGIN = 2.0


class Decode(NamedTuple):
    """How a picture was decoded: the file's full (width, height) and the DCT reduction."""
    size: tuple[int, int]
    factor: int = 1  # 1, 2, 4 or 8


def crop_box(width: int, height: int, scale: tuple[float, float],
             ratio: tuple[float, float], rng: random.Random) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop of area ``scale`` and aspect ``ratio``:
    torchvision's ``RandomResizedCrop.get_params`` rule, drawn from ``rng``."""
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


def reduce_decode(image: Image.Image, box: tuple[int, int, int, int], size: int) -> Decode:
    """Before ``image.load()``: ask a JPEG's decoder for 1/2, 1/4 or 1/8 of the full size, the
    largest reduction that leaves the crop ``box`` at least ``REDUCE_MARGIN * size`` pixels on
    its short side. Other formats, and small crops, decode in full (factor 1)."""
    full = image.size
    side = min(box[2] - box[0], box[3] - box[1])
    factor = next((f for f in (8, 4, 2) if side >= f * REDUCE_MARGIN * size), 1)
    if factor == 1 or image.format != "JPEG":
        return Decode(full)
    drafted = image.draft(image.mode, (full[0] // factor, full[1] // factor))
    if drafted is None:  # already configured or several tiles: a full decode
        return Decode(full)
    return Decode(full, round(full[0] / drafted[1][2]))  # drafted box: (0, 0, W / f, H / f)


def pixels(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] (a view of one copy of the pixels)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # [H, W, 3] -> CHW


def resized_crop(x: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> float [3, size, size] in 0..255 (integer values): the ``box`` region
    resized with antialiased bicubic, PIL's filter, by torch's uint8 kernel (SIMD; 2-3x faster
    than on floats, and the same picture within one or two grey levels)."""
    left, top, right, bottom = box
    region = x[:, top:bottom, left:right].unsqueeze(0)  # [1, 3, h, w]
    return F.interpolate(region, size=(size, size), mode="bicubic", antialias=True)[0].float()


class PretrainTransform:
    def __init__(self, cfg: ImageDataConfig):
        self.size = cfg.input_size
        self.scale = (cfg.min_scale, cfg.max_scale)
        self.hflip = cfg.hflip
        # (x / 255 - mean) / std as one multiply and one subtract
        self.gain = (1 / (255 * torch.tensor(cfg.std))).view(3, 1, 1)
        self.shift = (torch.tensor(cfg.mean) / torch.tensor(cfg.std)).view(3, 1, 1)

    def __call__(self, image: Image.Image, seed: int, decode: Decode | None = None
                 ) -> torch.Tensor:
        """RGB PIL image -> normalised tensor [3, size, size]; ``decode``: how ``draft``'s
        image was decoded (None: ``image`` is the full picture)."""
        return self.normalise(self.crop_flip(image, random.Random(seed), decode))

    def box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        return crop_box(width, height, self.scale, (3 / 4, 4 / 3), rng)

    def draft(self, image: Image.Image, seed: int) -> Decode:
        """Before ``image.load()``: the crop this seed draws, from the header's size, decides
        how far a JPEG may be reduced while decoding."""
        return reduce_decode(image, self.box(*image.size, random.Random(seed)), self.size)

    def crop_flip(self, image: Image.Image, rng: random.Random, decode: Decode | None = None
                  ) -> torch.Tensor:
        """The random resized crop (bicubic) and the flip, drawn from ``rng`` on the full size
        -> float [3, size, size] in 0..255."""
        decode = decode or Decode(image.size)
        box = self.box(*decode.size, rng)
        if decode.factor > 1:  # the box on the reduced picture, to its nearest pixels
            box = tuple(min(round(v / decode.factor), limit) for v, limit in
                        zip(box, (image.width, image.height) * 2))
        x = resized_crop(pixels(image), box, self.size)
        return x.flip(-1) if rng.random() < self.hflip else x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels 0..255 [3, H, W] -> ``(x / 255 - mean) / std``, in place."""
        return x.mul_(self.gain).sub_(self.shift)


class CentreTransform:
    """The test view (timm / MAE evaluation): the short side resized to ``input_size /
    crop_pct`` (bicubic), the centre ``input_size`` square cropped, normalised. No randomness."""

    def __init__(self, cfg: ImageDataConfig, crop_pct: float = 1.0):
        self.size = cfg.input_size
        self.resize = max(self.size, round(self.size / crop_pct))
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def draft(self, image: Image.Image, seed: int = 0) -> Decode:
        """A full decode: the test view is read rarely and never from a reduced picture."""
        return Decode(image.size)

    def __call__(self, image: Image.Image, seed: int = 0, decode: Decode | None = None
                 ) -> torch.Tensor:
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
