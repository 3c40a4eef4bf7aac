"""MAE's pretraining augmentation, seeded per sample: RandomResizedCrop + flip + normalise.

MAE (Appendix A.1): RandomResizedCrop(scale=(0.2, 1.0), bicubic) and a horizontal flip, nothing
else. The crop box follows torchvision's sampling rule on the file's full size (read from the
header, before decoding); the randomness comes from the sample's own seed (not a global RNG), so
a resumed run sees exactly the same crops.

Speed (bench/pipeline.py): ``resolution`` tells the decoder (``decode.py``) how far a JPEG may be
reduced in the DCT domain for this crop, and the crop is resized by torch's uint8 antialiased
bicubic on the decoded array rather than by PIL's resize, several times slower on one core.
"""
from __future__ import annotations

import copy
import math
import random
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from mim.modalities.image.config import ImageDataConfig, photo_stats
from mim.modalities.image.decode import Picture, pixels, to_rgb

# a reduced decode keeps at least this many pixels per output pixel on the crop's short side,
# PIL's own default (``Image.thumbnail``'s reducing_gap): the crop stays within 35 dB PSNR of
# the full decode's (tests/unit/test_image_pipeline.py; a margin of 1 falls to about 31 dB)
REDUCE_MARGIN = 2.0


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


def resized_crop(x: torch.Tensor, box: tuple[int, int, int, int], scale: float,
                 size: int) -> torch.Tensor:
    """uint8 [3, h, w] decoded at ``scale`` -> uint8 [3, size, size]: the ``box`` (in the
    file's pixels) resized with antialiased bicubic, PIL's filter, by torch's uint8 kernel
    (SIMD; the same picture as PIL's within a grey level or two)."""
    left, top, right, bottom = (round(v * scale) for v in box)  # the decoded picture's pixels
    region = x[:, top:bottom, left:right].unsqueeze(0)  # [1, 3, h', w'], a view
    return F.interpolate(region, size=(size, size), mode="bicubic", antialias=True)[0]


def photo_bands(cfg: ImageDataConfig) -> list[int] | None:
    """The bands of a photo a sample keeps (None: R, G, B as decoded)."""
    return None if list(cfg.bands) in ([], [0, 1, 2]) else list(cfg.bands)


def as_picture(image: Image.Image | Picture) -> Picture:
    """A PIL image (an in-memory picture, the tests') as a full-resolution ``Picture``."""
    return image if isinstance(image, Picture) else Picture(pixels(to_rgb(image)), image.size)


class PretrainTransform:
    """MAE's pretraining view of a photo (uint8 RGB)."""

    def __init__(self, cfg: ImageDataConfig):
        self.size = cfg.input_size
        self.scale = (cfg.min_scale, cfg.max_scale)
        self.hflip = cfg.hflip
        # (x / 255 - mean) / std as one multiply and one subtract (data.scale: 255 for photos)
        scale = 255.0 if cfg.scale is None else cfg.scale
        mean, std = photo_stats(cfg)
        self.gain = (1 / (scale * torch.tensor(std))).view(-1, 1, 1)  # [C, 1, 1]
        self.shift = (torch.tensor(mean) / torch.tensor(std)).view(-1, 1, 1)
        self.bands = photo_bands(cfg)

    def resized(self, size: int) -> "PretrainTransform":
        """The same augmentation with crops of ``size`` pixels a side."""
        other = copy.copy(self)
        other.size = size
        return other

    def __call__(self, image: Image.Image | Picture, seed: int) -> torch.Tensor:
        """An RGB picture -> normalised tensor [3, size, size]."""
        return self.normalise(self.crop_flip(image, random.Random(seed)))

    def box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        return crop_box(width, height, self.scale, (3 / 4, 4 / 3), rng)

    def resolution(self, width: int, height: int, seed: int) -> float:
        """The least resolution (decoded pixels per pixel of the file) the view of this seed
        needs of a ``width`` x ``height`` file: its crop, drawn from the header's size, keeps
        ``REDUCE_MARGIN`` pixels per output pixel."""
        left, top, right, bottom = self.box(width, height, random.Random(seed))
        return min(1.0, REDUCE_MARGIN * self.size / min(right - left, bottom - top))

    def crop_flip(self, image: Image.Image | Picture, rng: random.Random) -> torch.Tensor:
        """The random resized crop (bicubic) and the flip, drawn from ``rng`` on the file's
        full size -> uint8 [3, size, size]."""
        picture = as_picture(image)
        box = self.box(*picture.size, rng)
        x = resized_crop(picture.pixels, box, picture.scale, self.size)
        return x.flip(-1) if rng.random() < self.hflip else x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels [3, H, W] -> float ``(x / 255 - mean) / std`` of the chosen bands
        (one pass to float, one in place)."""
        x = x if self.bands is None else x[self.bands]  # [C, H, W]
        return (x * self.gain).sub_(self.shift)


class CentreTransform:
    """The test view (timm / MAE evaluation): the short side resized to ``input_size /
    crop_pct`` (bicubic), the centre ``input_size`` square cropped, normalised. No randomness."""

    def __init__(self, cfg: ImageDataConfig, crop_pct: float = 1.0):
        self.size = cfg.input_size
        self.resize = max(self.size, round(self.size / crop_pct))
        mean, std = photo_stats(cfg)
        self.mean = torch.tensor(mean).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.scale = 255.0 if cfg.scale is None else cfg.scale
        self.bands = photo_bands(cfg)

    def resolution(self, width: int, height: int, seed: int = 0) -> float:
        """All of it: the test view is read rarely, and never from a reduced picture."""
        return 1.0

    def __call__(self, image: Image.Image | Picture, seed: int = 0) -> torch.Tensor:
        """An RGB picture -> normalised tensor [3, size, size] (``seed`` is unused)."""
        if isinstance(image, Picture):
            image = Image.fromarray(image.pixels.permute(1, 2, 0).numpy())  # [H, W, 3]
        scale = self.resize / min(image.width, image.height)
        width, height = max(self.size, round(image.width * scale)), max(
            self.size, round(image.height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # [H, W, 3]
        x = pixels.permute(2, 0, 1).float().div_(self.scale)  # [3, H, W]
        x = x if self.bands is None else x[self.bands]  # [C, H, W]
        return (x - self.mean) / self.std


# -- rasters: any band count, float values in the file's units -----------------------------------
def resize_bands(x: torch.Tensor, size: int) -> torch.Tensor:
    """float [C, h, w], NaN where there is no data -> [C, size, size] by antialiased bilinear
    interpolation (no ringing: bicubic's overshoot would invent reflectance beyond the data);
    a pixel is no data where any no-data pixel reaches it (the valid map resized alike)."""
    if not x.sum().isnan():  # NaN propagates through the sum: no pixel of no data
        return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)[0]
    valid = ~torch.isnan(x)  # [C, h, w]
    filled = torch.where(valid, x, torch.zeros((), dtype=x.dtype))[None]  # [1, C, h, w]
    out = F.interpolate(filled, size=(size, size), mode="bilinear", antialias=True)[0]
    reach = F.interpolate(valid[None].to(x.dtype), size=(size, size), mode="bilinear",
                          antialias=True)[0]  # [C, size, size], 1 where only valid pixels
    return out.masked_fill_(reach < 1 - 1e-6, float("nan"))


class RasterTransform:
    """MAE's pretraining view of a raster: the same seeded RandomResizedCrop box and flip as
    photos (``crop_box`` on the file's size), resized by ``resize_bands``, then ``(x - mean) /
    std`` per band; NaN (no data) stays NaN for the collate and the loss."""

    def __init__(self, cfg: ImageDataConfig):
        self.size = cfg.input_size
        self.scale = (cfg.min_scale, cfg.max_scale)
        self.hflip = cfg.hflip
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)

    def resized(self, size: int) -> "RasterTransform":
        other = copy.copy(self)
        other.size = size
        return other

    def resolution(self, width: int, height: int, seed: int) -> float:
        return 1.0  # rasters are read whole

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """float [C, H, W] (or a time stack [C, T, H, W], every date cropped alike) in the
        file's units / data.scale -> normalised [C, (T,) size, size]."""
        rng = random.Random(seed)
        left, top, right, bottom = crop_box(x.shape[-1], x.shape[-2], self.scale, (3 / 4, 4 / 3),
                                            rng)
        flip = rng.random() < self.hflip
        out = self.per_date(x, lambda bands: resize_bands(bands[:, top:bottom, left:right],
                                                          self.size))
        return self.normalise(out.flip(-1) if flip else out)

    @staticmethod
    def per_date(x: torch.Tensor, view) -> torch.Tensor:
        """``view`` (bands [C', h, w] -> [C', h', w']) on x [C, H, W] or [C, T, H, W]."""
        if x.dim() == 3:
            return view(x)
        out = view(rearrange(x, "c t h w -> (c t) h w"))
        return rearrange(out, "(c t) h w -> c t h w", t=x.shape[1])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per band of x [C, *spatial]."""
        shape = (-1,) + (1,) * (x.dim() - 1)  # [C, 1, ...]
        return (x - self.mean.view(shape)) / self.std.view(shape)


class RasterCentreTransform(RasterTransform):
    """The test view of a raster: the short side resized to ``input_size / crop_pct``, the
    centre square cropped, normalised. No randomness."""

    def __init__(self, cfg: ImageDataConfig, crop_pct: float = 1.0):
        super().__init__(cfg)
        self.resize = max(self.size, round(self.size / crop_pct))

    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        height, width = x.shape[-2:]
        side = max(1, round(min(height, width) * self.size / self.resize))  # pixels kept
        top, left = int((height - side) // 2), int((width - side) // 2)
        return self.normalise(self.per_date(x, lambda bands: resize_bands(
            bands[:, top:top + side, left:left + side], self.size)))


Transform = Union[PretrainTransform, CentreTransform, RasterTransform]
