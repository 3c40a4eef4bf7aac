"""Figure 8: the image input pipeline, ours against MAE's torchvision transform, on one core.

One item = open a JPEG, decode, RandomResizedCrop(224, scale=(0.2, 1.0), bicubic), flip, to a
normalised float tensor, in this process with one torch thread, as one data-loader worker does
it; timed in CPU seconds of this process (``time.process_time``), per core, which the other jobs
of a shared machine do not inflate as they do wall-clock time. Ours is ``ImageFolder.load`` (the crop drawn from the header's size, a JPEG decoded reduced
in the DCT domain when the crop shrinks 4x or more, torch's uint8 bicubic); the peer is MAE's
pretraining transform: PIL open and ``convert("RGB")``, ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ToTensor``, ``Normalize``. Both read the same files, in one round robin.

The files: scikit-image's photographs resized (bicubic) with a little sensor-like grain, saved as
JPEG quality 90: ImageNet-sized (500x375 and 375x500) and 12-megapixel (4000x3000); made once in
``$MIM_CACHE_DIR`` (default ``~/.cache/mim``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import Row, Settings, round_robin
from mim.data import sample_seed

VERSION = "v1"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def jpegs(width: int, height: int, count: int) -> list[Path]:
    """``count`` JPEGs of ``width`` x ``height`` (odd ones turned to portrait), made on first use."""
    base = Path(os.environ.get("MIM_CACHE_DIR") or Path("~/.cache/mim").expanduser())
    folder = base / "bench_images" / f"{VERSION}_{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{PHOTOS[i % len(PHOTOS)]}_{i}.jpg"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp.jpg")
            _photo(PHOTOS[i % len(PHOTOS)], *((height, width) if i % 2 else (width, height)),
                   seed=i).save(tmp, format="JPEG", quality=90)
            tmp.replace(path)  # atomic: a killed run leaves no half-written file
        paths.append(path)
    return paths


def _photo(name: str, width: int, height: int, seed: int):
    import skimage.data
    from PIL import Image

    image = getattr(skimage.data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    big = Image.fromarray(image).resize((width, height), Image.BICUBIC)
    grain = np.random.default_rng(seed).normal(0, 3, (height, width, 1))
    return Image.fromarray(np.clip(np.asarray(big, np.float32) + grain, 0, 255).astype(np.uint8))


def _ours(paths: list[Path], size: int, count: int):
    from mim.modalities.image.config import ImageDataConfig
    from mim.modalities.image.dataset import ImageFolder
    from mim.modalities.image.transforms import PretrainTransform

    folder = ImageFolder(paths, [0] * len(paths), PretrainTransform(ImageDataConfig(input_size=size)))
    position = [0]

    def items() -> None:
        for _ in range(count):
            index = position[0]
            position[0] += 1
            x, _ = folder.load(index % len(paths), sample_seed(0, 0, index))
            assert x.shape == (3, size, size)

    return items


def _mae(paths: list[Path], size: int, count: int):
    from PIL import Image
    from torchvision import transforms as T

    from mim.modalities.image.config import IMAGENET_MEAN, IMAGENET_STD

    transform = T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    position = [0]

    def items() -> None:
        for _ in range(count):
            path = paths[position[0] % len(paths)]
            position[0] += 1
            with open(path, "rb") as f:  # torchvision's ImageFolder loader, as MAE uses it
                image = Image.open(f).convert("RGB")
            assert transform(image).shape == (3, size, size)

    return items


def run(settings: Settings) -> list[Row]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core: one worker's process
    torch.manual_seed(0)
    size = 32 if settings.quick else 224
    sets = [("ImageNet-sized 500x375", (500, 375, 8), 64, 2.0),
            ("12-MP 4000x3000", (4000, 3000, 4), 8, 4.0)]
    if settings.quick:  # two small files: checks that it runs
        sets = [(name, (500, 375, 2), 2, goal) for name, _, _, goal in sets[:1]]
    rows = []
    try:
        for name, files, count, goal in sets:
            paths = jpegs(*files)
            t = round_robin({"ours": _ours(paths, size, count), "mae": _mae(paths, size, count)},
                            settings, clock=time.process_time)
            rows.append(Row(f"8. image pipeline, {name} JPEGs: ours vs MAE's torchvision "
                            f"transform (images per CPU second, 1 thread, {count} per round)",
                            t.ratio("mae", "ours"), f"ours {count / t.median('ours'):.1f} / MAE "
                            f"{count / t.median('mae'):.1f} images/CPU-s", goal))
    finally:
        torch.set_num_threads(threads)
    return rows
