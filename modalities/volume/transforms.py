"""The volume pipeline, seeded per sample: resample -> normalise -> crop / pad -> flip.

Only resampling and normalisation look at the whole volume; they are deterministic. Every random
choice (crop corner, padding offset, flips) comes from ``random.Random(seed)``, never from a
global RNG, so a resumed run sees exactly the same crops.
"""
from __future__ import annotations

import logging
import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mim.data import UnreadableSample
from mim.modalities.volume.config import VolumeDataConfig

log = logging.getLogger("mim.data")

MAX_STAT_VOXELS = 1 << 22  # percentiles of larger volumes use an evenly strided subset


def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target: Sequence[float]) -> tuple[int, ...]:
    """Voxel counts covering the same extent at the ``target`` spacing (at least one each)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample(volume: np.ndarray, spacing: Sequence[float],
             target: Sequence[float]) -> np.ndarray:
    """[C, D, H, W] at ``spacing`` -> [C, D', H', W'] at ``target``, trilinear."""
    size = resampled_shape(volume.shape[1:], spacing, target)
    if size == tuple(volume.shape[1:]):
        return volume
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).unsqueeze(0)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)[0].numpy()


def _stat_view(channel: np.ndarray) -> np.ndarray:
    flat = channel.reshape(-1)
    step = -(-flat.size // MAX_STAT_VOXELS)  # ceil
    return flat[::step] if step > 1 else flat


def normalise(volume: np.ndarray, cfg: VolumeDataConfig) -> np.ndarray:
    """Per-channel intensity normalisation of [C, D, H, W] float32 (see VolumeDataConfig)."""
    out = np.empty(volume.shape, dtype=np.float32)
    for c, channel in enumerate(volume):
        if cfg.intensity == "percentile":
            low, high = np.percentile(_stat_view(channel), [cfg.p_low, cfg.p_high])
        elif cfg.intensity == "window":
            low, high = cfg.window_min, cfg.window_max
        else:
            low, high = None, None
        v = channel.astype(np.float32, copy=True)
        if low is not None:
            np.clip(v, low, high, out=v)
        if cfg.use_zscore:
            mean, std = float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))
            v -= mean
            if std > 1e-8:
                v /= std
        elif low is not None:
            v -= low
            if high - low > 1e-12:
                v /= high - low
        out[c] = v
    return out


def crop_or_pad(volume: np.ndarray, size: Sequence[int], pad_value: float | None,
                rng: random.Random) -> np.ndarray:
    """A random ``size`` window of [C, D, H, W]; axes shorter than ``size`` are padded around
    the whole extent at a random offset, with ``pad_value`` (None: each channel's minimum)."""
    src, dst = [], []
    for n, s in zip(volume.shape[1:], size):
        if n >= s:
            start = rng.randint(0, n - s)
            src.append(slice(start, start + s))
            dst.append(slice(0, s))
        else:
            offset = rng.randint(0, s - n)
            src.append(slice(0, n))
            dst.append(slice(offset, offset + n))
    region = volume[(slice(None), *src)]
    if region.shape[1:] == tuple(size):
        return np.ascontiguousarray(region)
    if pad_value is None:
        fill = volume.reshape(volume.shape[0], -1).min(axis=1)
    else:
        fill = np.full(volume.shape[0], pad_value, dtype=np.float32)
    out = np.empty((volume.shape[0], *size), dtype=np.float32)
    out[:] = fill.reshape(-1, 1, 1, 1)
    out[(slice(None), *dst)] = region
    return out


class VolumeTransform:
    """(volume [C, D, H, W], spacing (D, H, W), seed) -> float32 tensor [C, *input_size]."""

    def __init__(self, cfg: VolumeDataConfig):
        self.cfg = cfg
        self.size = tuple(cfg.input_size)
        self.padded = 0  # volumes smaller than the crop seen by this process (a worker)

    def prepare(self, volume: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """The deterministic part: resampling and normalisation of the whole volume (a volume
        below ``data.min_size`` is UnreadableSample: skipped and replaced like one)."""
        volume = volume.astype(np.float32, copy=False)
        if self.cfg.target_spacing is not None:
            volume = resample(volume, spacing, self.cfg.target_spacing)
        self._check_size(tuple(volume.shape[1:]))
        return normalise(volume, self.cfg)

    def _check_size(self, shape: tuple[int, ...]) -> None:
        if all(s >= c for s, c in zip(shape, self.size)):
            return
        floor = self.cfg.min_size
        if floor is not None and any(s < f for s, f in zip(shape, floor)):
            raise UnreadableSample(f"shape {list(shape)} (D, H, W) is below data.min_size="
                                   f"{list(floor)}")
        self.padded += 1
        if self.padded & (self.padded - 1) == 0:  # the 1st, 2nd, 4th, ...: a count, no flood
            log.warning("volume data: %d volume%s smaller than the crop %s padded so far in "
                        "this process (the latest %s); data.min_size=[D,H,W] skips those below "
                        "a floor", self.padded, "" if self.padded == 1 else "s",
                        list(self.size), list(shape))

    def __call__(self, volume: np.ndarray, spacing: Sequence[float], seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        x = crop_or_pad(self.prepare(volume, spacing), self.size, self.cfg.pad_value, rng)
        flips = [axis + 1 for axis, p in enumerate(self.cfg.flip) if rng.random() < p]
        if flips:
            x = np.flip(x, axis=flips)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
