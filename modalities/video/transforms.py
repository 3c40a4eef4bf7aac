"""Seeded clip sampling and augmentation: where in the video, which square, flipped or not.

Temporal: ``num_frames`` indices every ``sampling_rate`` frames from a uniformly random start
(VideoMAE / MAE-ST). Spatial: pytorchvideo's ``random_short_side_scale`` + ``random_crop``
(short side to a random size in ``[min_scale, max_scale] x input_size``, then a random square),
computed in the source frame's coordinates so only the cropped square is converted to float and
resized (with antialiasing): the same picture, without scaling a full 1080p clip first. The
boxes are drawn on the file's full frame size before decoding, and the decoder scales the frames
down as far as every view's box keeps ``REDUCE_MARGIN`` pixels per output pixel (the image
pipeline's rule): a 1080p clip cropped to 224 px is converted to RGB at about half size.
All randomness comes from a ``random.Random`` seeded per clip, never a global RNG, so a resumed
run sees exactly the same clips.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from mim.data import UnreadableSample
from mim.modalities.image.transforms import REDUCE_MARGIN
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.source import Video


def too_short(available: int, num_frames: int, sampling_rate: int) -> UnreadableSample:
    """A video of ``available`` frames, too short for one clip (``data.pad_short=false``)."""
    span = (num_frames - 1) * sampling_rate + 1
    return UnreadableSample(
        f"too short: {available} frames, a clip of {num_frames} frames every {sampling_rate} "
        f"needs {span} (set data.pad_short=true to pad)",
        f"too short for a clip ({span} frames: data.num_frames {num_frames} every "
        f"data.sampling_rate {sampling_rate})",
        "set data.pad_short=true to pad short videos by repeating frames, or lower "
        "data.num_frames or data.sampling_rate")


def padding(available: int, num_frames: int, sampling_rate: int) -> str | None:
    """How a clip of a video of ``available`` frames is padded; None: it needs no padding."""
    span = (num_frames - 1) * sampling_rate + 1
    if available >= span:
        return None
    return (f"{available} frames, shorter than a clip ({span} frames: data.num_frames "
            f"{num_frames} every data.sampling_rate {sampling_rate}); frames repeated to fill it "
            "(data.pad_short=false skips such videos)")


def clip_indices(rng: random.Random, first: int, end: int, num_frames: int,
                 sampling_rate: int, pad: bool) -> list[int]:
    """Frame indices of one clip inside frames ``[first, end)`` of a video.

    Too short a range raises ``UnreadableSample``, or with ``pad`` repeats its last frame
    (VideoMAE and pytorchvideo also fill short clips with repeated frames); no random draw then,
    so the clip stays a pure function of the seed.
    """
    span = (num_frames - 1) * sampling_rate + 1
    available = end - first
    if available < 1:
        raise UnreadableSample("no frames in the requested range")
    if available < span:
        if not pad:
            raise too_short(available, num_frames, sampling_rate)
        return [min(first + i * sampling_rate, end - 1) for i in range(num_frames)]
    start = rng.randint(first, end - span)
    return [start + i * sampling_rate for i in range(num_frames)]


def crop_box(height: int, width: int, size: int, scale: tuple[float, float],
             rng: random.Random) -> tuple[int, int, int]:
    """(top, left, side) in the source frame of a random short-side-scale-then-crop.

    The short side is scaled to an integer in ``[scale[0] * size, scale[1] * size]`` and a
    ``size`` square is cropped at a random place of the scaled frame.
    """
    short = min(height, width)
    target = rng.randint(round(scale[0] * size), max(round(scale[0] * size),
                                                     round(scale[1] * size)))
    factor = target / short
    scaled_h, scaled_w = int(height * factor), int(width * factor)
    top = rng.randint(0, max(scaled_h - size, 0))
    left = rng.randint(0, max(scaled_w - size, 0))
    side = max(1, min(round(size / factor), short))
    top = min(round(top / factor), height - side)
    left = min(round(left / factor), width - side)
    return top, left, side


class ClipTransform:
    """uint8 frames [T, H, W, 3] -> normalised float clip [3, T, size, size].

    The square is resized while still uint8 (PyTorch's vectorised channels-last uint8 path,
    which is how the frames lie in memory: 2 against 12 ms for 16 frames of 200 to 224 px, 3
    against 33 ms with antialiasing, on an AVX2 core), rounded to whole levels as PIL and
    torchvision's uint8 resize are; then ``(x / 255 - mean) / std`` is one multiply and one add
    in place.
    """

    def __init__(self, cfg: VideoDataConfig):
        self.size = cfg.input_size
        self.scale = (cfg.min_scale, cfg.max_scale)
        self.hflip = cfg.hflip
        mean = torch.tensor(cfg.mean, dtype=torch.float64).view(3, 1, 1, 1)
        std = torch.tensor(cfg.std, dtype=torch.float64).view(3, 1, 1, 1)
        self.gain = (1.0 / (255.0 * std)).float()  # [3, 1, 1, 1]
        self.shift = (-mean / std).float()  # [3, 1, 1, 1]

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: random.Random,
                 full: tuple[int, int] | None = None) -> torch.Tensor:
        return self.normalise(self.crop_flip(frames, rng, full))

    def resolution(self, height: int, width: int, rng: random.Random) -> float:
        """The least resolution (decoded pixels per pixel of the file) the view ``rng`` will
        draw needs of a ``height`` x ``width`` video: its box keeps ``REDUCE_MARGIN`` pixels per
        output pixel. Drawn on a copy: ``rng`` itself is left for the crop."""
        probe = random.Random()
        probe.setstate(rng.getstate())
        side = crop_box(height, width, self.size, self.scale, probe)[2]
        return min(1.0, REDUCE_MARGIN * self.size / side)

    def crop_flip(self, frames: np.ndarray | torch.Tensor, rng: random.Random,
                  full: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 [T, h, w, 3] -> the resized, maybe flipped square [T, 3, size, size], uint8.
        ``full``: the file's (height, width) when the frames were decoded smaller; the box is
        drawn on it and scaled to the frames."""
        frames = torch.as_tensor(frames)  # [T, h, w, 3] uint8
        _, h, w, _ = frames.shape
        height, width = full or (h, w)
        top, left, side = crop_box(height, width, self.size, self.scale, rng)
        rows = slice(round(top * h / height), round((top + side) * h / height))
        cols = slice(round(left * w / width), round((left + side) * w / width))
        square = frames[:, rows, cols]  # [T, side', side', 3]
        square = square.permute(0, 3, 1, 2)  # [T, 3, side', side'], channels-last in memory
        if square.shape[-2:] != (self.size, self.size):
            square = F.interpolate(square, size=(self.size, self.size), mode="bilinear",
                                   align_corners=False, antialias=square.shape[-1] > self.size)
        if rng.random() < self.hflip:
            square = square.flip(-1)
        return square

    def normalise(self, square: torch.Tensor) -> torch.Tensor:
        """uint8 [T, 3, S, S] -> ``(x / 255 - mean) / std`` as float [3, T, S, S]."""
        x = square.permute(1, 0, 2, 3).contiguous().float()  # [3, T, S, S]
        return x.mul_(self.gain).add_(self.shift)


class ClipSampler:
    """K views of one video: each its own window and augmentation from its own sub-seed,
    the union of their frames decoded once (MAE-ST repeated sampling)."""

    def __init__(self, cfg: VideoDataConfig, transform: ClipTransform | None = None):
        self.cfg = cfg
        self.transform = transform or ClipTransform(cfg)

    def windows(self, seed: int, first: int, end: int) -> tuple[list[list[int]],
                                                                  list[random.Random]]:
        """Per view: its frame indices and its generator (continued by the augmentation)."""
        root = random.Random(seed)
        rngs = [random.Random(root.getrandbits(63)) for _ in range(self.cfg.repeat)]
        windows = [clip_indices(r, first, end, self.cfg.num_frames, self.cfg.sampling_rate,
                                self.cfg.pad_short) for r in rngs]
        return windows, rngs

    def __call__(self, video: Video, seed: int, first: int, end: int) -> torch.Tensor:
        """Views of ``video`` (frames ``[first, end)``): [3, T, S, S] or [K, 3, T, S, S]."""
        windows, rngs = self.windows(seed, first, end)
        union = sorted({i for window in windows for i in window})

        def resolution(height: int, width: int) -> float:  # one decode serves every view
            return max(self.transform.resolution(height, width, rng) for rng in rngs)

        frames = video.read(union, resolution)  # [U, h, w, 3]
        if frames.ndim != 4 or frames.shape[0] != len(union) or frames.shape[-1] != 3:
            raise UnreadableSample(f"decoder returned frames of shape {tuple(frames.shape)}")
        if frames.shape[1] < 1 or frames.shape[2] < 1:
            raise UnreadableSample("frames of zero size")
        where = {index: row for row, index in enumerate(union)}
        every = list(range(len(union)))
        views = []
        for window, rng in zip(windows, rngs):
            rows = [where[i] for i in window]
            clip = frames if rows == every else frames[rows]  # one view: no copy of the frames
            views.append(self.transform(clip, rng, video.frame_size))
        return views[0] if len(views) == 1 else torch.stack(views)
