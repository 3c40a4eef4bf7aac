"""An image file -> RGB pixels as a uint8 tensor, a JPEG decoded reduced where the view allows.

JPEGs go through libjpeg-turbo by simplejpeg: straight into an array (no PIL image, no copy out
of it; a 12-MP file in half PIL's time), and, when the caller's view needs at most half the
resolution, scaled in the DCT domain by 1/2, 1/4 or 1/8 (libjpeg's other M/8 factors decode
slower than the next of these, 3/8 slower than 1/2).
Every other file, a JPEG simplejpeg refuses (CMYK, damaged) and one above PIL's pixel limit are
read by PIL in full, which raises its own errors.

Mode handling (PIL): palette and RGBA images are flattened to RGB, grayscale is repeated to
three channels; 16-bit and float pictures are refused here (``raster.py`` reads them, every
value kept).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import simplejpeg
import torch
from PIL import Image

from mim.data import UnreadableSample


class Picture(NamedTuple):
    pixels: torch.Tensor  # uint8 [3, h, w]: the decoded picture, maybe reduced
    size: tuple[int, int]  # the file's full (width, height), from its header

    @property
    def scale(self) -> float:
        """Decoded pixels per pixel of the file: libjpeg's M/8 (1: a full decode)."""
        return round(8 * self.pixels.shape[-1] / self.size[0]) / 8


DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit, 32-bit and float pictures


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit PIL mode -> RGB (alpha dropped, grayscale repeated, palette and CMYK
    converted, as ImageNet pipelines do). A 16-bit or float picture is data, never squeezed
    into 8 bits: ``UnreadableSample`` (``data.reader=raster`` reads its values)."""
    if image.mode in DEEP_MODES:
        raise UnreadableSample(f"a {image.mode} picture among photos: data.reader=raster "
                               "reads its values (never rescaled to 8 bits)", "not a photo")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")  # RGB: no copy


def pixels(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] (a view of one copy of the pixels)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # [H, W, 3] -> CHW


def read(path: Path | bytes, scale: Callable[[int, int], float] | None = None) -> Picture:
    """The file's (or a shard member's bytes') RGB pixels; ``scale(width, height)``: the least resolution the caller's view
    needs, as decoded pixels per pixel of the file (None or 1: all of it). PIL's errors pass
    through (the dataset reports them)."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    if simplejpeg.is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                raise ValueError("larger than PIL's limit")  # PIL warns, or refuses a bomb
            need = 1.0 if scale is None else scale(width, height)
            factor = next((f for f in (8, 4, 2) if need <= 1 / f), 1)
            array = simplejpeg.decode_jpeg(  # [h, w, 3]; libjpeg's size at 1/f: ceil(W / f)
                data, colorspace="RGB", min_width=-(-width // factor),
                min_height=-(-height // factor))
            return Picture(torch.from_numpy(array).permute(2, 0, 1), (width, height))
        except ValueError:  # CMYK, damaged: PIL decides, and names the problem
            pass
    with Image.open(io.BytesIO(data)) as image:  # the bytes read once above
        image.load()
        return Picture(pixels(to_rgb(image)), image.size)
