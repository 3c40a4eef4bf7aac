"""MAE's fine-tuning view of an image (Appendix A.1, Table 11): the training crop and flip, then
RandAugment on the picture and random erasing on the normalised tensor.

RandAugment is timm's (``data.randaug``, its spec syntax: MAE's ``rand-m9-mstd0.5-inc1`` is 2
operations of magnitude 9 +- 0.5, increasing-severity variants). It draws from Python's and
NumPy's global generators, so those are seeded from the sample's own seed around the call and
restored after: a sample's view is a function of its seed, as everywhere in mim. Random erasing
(Zhong et al. 2020, timm's ``remode=pixel``) is written here on a per-sample generator: with
probability ``data.reprob`` one rectangle of 2-33 % of the area, aspect 0.3-3.3, is filled with
standard normal noise (in normalised units, so noise of the data's own spread).
"""
from __future__ import annotations

import contextlib
import math
import random
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from mim.modalities.image.config import photo_stats
from mim.modalities.image.decode import Picture, pixels
from mim.modalities.image.transforms import PretrainTransform

ERASE_AREA = (0.02, 1 / 3)
ERASE_ASPECT = (0.3, 1 / 0.3)


def randaugment(spec: str, size: int, mean: list[float]) -> Callable[[Image.Image], Image.Image]:
    """timm's RandAugment for ``spec`` at this input size, filling with the mean colour; a bad
    spec raises ``ValueError`` naming ``data.randaug``."""
    from timm.data.auto_augment import rand_augment_transform

    hparams = {"translate_const": int(size * 0.45), "interpolation": Image.BICUBIC,
               "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    try:
        transform = rand_augment_transform(spec, hparams)
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise ValueError(f"data.randaug: '{spec}' is not a RandAugment spec such as "
                         f"rand-m9-mstd0.5-inc1 ('' disables it){detail}") from None
    for op in transform.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize
    return transform


def check_finetune_augment(randaug: str, reprob: float, size: int, mean: list[float]) -> None:
    """Config checks of ``data.randaug`` and ``data.reprob``: one-line ``ValueError``s."""
    if not 0.0 <= reprob <= 1.0:
        raise ValueError(f"data.reprob: must be in [0, 1], got {reprob}")
    if randaug:
        randaugment(randaug, size, mean)  # a bad spec fails here


def posterize(image: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """Keep the top ``bits_to_keep`` bits of every channel. timm asks for 0 bits at the top
    magnitude of ``PosterizeIncreasing`` (and the bottom of ``Posterize``), which current
    Pillow refuses ("bits must be between or equal to 1 and 8"; every sample that drew it was
    lost as unreadable); keeping no bit is a black picture, as in TensorFlow's RandAugment."""
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits_to_keep)


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Python's and NumPy's global generators seeded with ``seed`` inside, restored after."""
    python, numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def erase(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Fill one random rectangle of x [C, H, W] with N(0, 1) noise, in place; up to 10 draws
    of area and aspect, none if no draw fits (timm's rule)."""
    _, height, width = x.shape
    for _ in range(10):
        area = height * width * rng.uniform(*ERASE_AREA)
        aspect = math.exp(rng.uniform(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            noise = torch.Generator().manual_seed(rng.getrandbits(63))
            x[:, top:top + h, left:left + w] = torch.randn(x.shape[0], h, w, generator=noise)
            break
    return x


class FinetuneTransform(PretrainTransform):
    """RGB PIL image -> [3, size, size]: crop and flip, RandAugment, normalise, random erasing;
    every draw from the sample's seed."""

    def __init__(self, cfg):
        super().__init__(cfg)
        mean = photo_stats(cfg)[0]
        self.randaug = randaugment(cfg.randaug, cfg.input_size, mean) if cfg.randaug else None
        self.reprob = cfg.reprob

    def __call__(self, image: Image.Image | Picture, seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        x = self.crop_flip(image, rng)  # uint8 [3, size, size]
        if self.randaug is not None:
            picture = Image.fromarray(x.permute(1, 2, 0).numpy())  # [size, size, 3]
            with seeded_globals(rng.getrandbits(32)):
                x = pixels(self.randaug(picture))
        x = self.normalise(x)
        if rng.random() < self.reprob:
            erase(x, rng)
        return x
