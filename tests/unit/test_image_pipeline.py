"""The fast image pipeline keeps MAE's views: the crop boxes are RandomResizedCrop's, and a JPEG
decoded at a reduced size (DCT scaling) gives the full decode's crop within 35 dB PSNR."""
from __future__ import annotations

import random

import mim  # noqa: F401  (torchvision import fix)
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import ImageFolder
from mim.modalities.image.decode import read
from mim.modalities.image.transforms import PretrainTransform, crop_box

SIZE = 64  # a small output, so that modest files already decode at 1/2, 1/4 and 1/8


def photo_jpeg(path, width: int, height: int) -> None:
    """A natural-looking JPEG (quality 90): a photograph resized, with sensor-like noise."""
    base = Image.fromarray(skimage.data.chelsea()).resize((width, height), Image.BICUBIC)
    grain = np.random.default_rng(0).normal(0, 3, (height, width, 1))
    pixels = np.clip(np.asarray(base, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("width,height", [(700, 500), (1400, 1050), (1100, 2300)])
def test_reduced_decode_matches_the_full_decode_of_the_same_box(tmp_path, width, height):
    path = tmp_path / "photo.jpg"
    photo_jpeg(path, width, height)
    transform = PretrainTransform(ImageDataConfig(input_size=SIZE))
    full = read(path)
    assert full.size == (width, height) and full.scale == 1.0
    scales, worst = set(), float("inf")
    for seed in range(40):
        picture = read(path, lambda w, h: transform.resolution(w, h, seed))
        assert picture.size == (width, height)
        scales.add(picture.scale)
        fast = transform.crop_flip(picture, random.Random(seed))
        exact = transform.crop_flip(full, random.Random(seed))
        worst = min(worst, psnr(fast, exact))
    assert min(scales) <= 0.5, f"no crop was decoded reduced: {scales}"
    assert worst >= 35.0, f"worst PSNR {worst:.1f} dB (scales {sorted(scales)})"


def test_the_dataset_decodes_reduced_and_stays_a_function_of_the_seed(tmp_path):
    photo_jpeg(tmp_path / "big.jpg", 1400, 1050)
    folder = ImageFolder([tmp_path / "big.jpg"], [0],
                         PretrainTransform(ImageDataConfig(input_size=SIZE)))
    assert min(folder.transform.resolution(1400, 1050, s) for s in range(20)) < 0.5
    first, _ = folder.load(0, 7)
    assert first.shape == (3, SIZE, SIZE) and first.dtype == torch.float32
    assert torch.equal(first, folder.load(0, 7)[0])
    # the view PIL's decode of the whole file gives, within two grey levels on average
    with Image.open(tmp_path / "big.jpg") as image:
        image.load()
        assert (first - folder.transform(image, 7)).abs().mean() < 2 / (255 * 0.225)


@pytest.mark.parametrize("width,height", [(500, 375), (90, 400)])
def test_crop_boxes_follow_random_resized_crop(width, height):
    """Our seeded draws and torchvision's get_params give the same distribution of box
    position, size and area (two-sample Kolmogorov-Smirnov on each); the tall picture also
    takes torchvision's fallback branch."""
    n, scale, ratio = 3000, (0.2, 1.0), (3 / 4, 4 / 3)
    rng = random.Random(0)
    ours = np.array([crop_box(width, height, scale, ratio, rng) for _ in range(n)])
    torch.manual_seed(0)
    picture = torch.empty(3, height, width)
    theirs = []
    for _ in range(n):
        top, left, h, w = RandomResizedCrop.get_params(picture, list(scale), list(ratio))
        theirs.append((left, top, left + w, top + h))
    theirs = np.array(theirs)

    def features(boxes):  # left, top, width, height, area
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return [boxes[:, 0], boxes[:, 1], w, h, w * h]

    for name, a, b in zip(("left", "top", "width", "height", "area"),
                          features(ours), features(theirs)):
        assert ks_2samp(a, b).pvalue > 1e-3, name
    assert (ours[:, 2] <= width).all() and (ours[:, 3] <= height).all()
    # a different distribution is told apart: scale (0.5, 1) against (0.2, 1)
    other = np.array([crop_box(width, height, (0.5, 1.0), ratio, rng) for _ in range(n)])
    assert ks_2samp(features(other)[4], features(theirs)[4]).pvalue < 1e-6
