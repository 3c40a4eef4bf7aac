"""``data.reader=pytorchvideo``: clips through pytorchvideo's ``EncodedVideo``, clip sampler and
functional video transforms, as the project issue describes (the native reader stays default).

Per view: ``EncodedVideo.from_path(path, decoder=data.decoder)`` (GIFs: pyav), a window of
``span / fps`` seconds from ``RandomClipSampler`` (its start snapped to a frame),
``get_clip(start, end)``,
``uniform_temporal_subsample`` to ``num_frames`` (a window of ``span`` frames gives exactly every
``sampling_rate``-th frame), ``short_side_scale`` to a random size in
``[min_scale, max_scale] x input_size``, a random ``input_size`` square, a flip with probability
``hflip``, ``div_255`` and mean / std. pytorchvideo's random crop and flip exist only in their
``*_with_boxes`` forms drawing from ``numpy.random``, so those two are slices here.

Determinism: ``RandomClipSampler`` draws its start from the module-level ``random``; the call is
wrapped in ``random.getstate`` / ``seed(sub-seed)`` / ``setstate``, so the window is a pure
function of the sample's seed (exact resume) and the global state is left as it was. Data-loader
workers are processes, so no other thread sees the temporary state. Sizes, crop and flip come
from the same ``random.Random(seed)`` chain as the native reader (but not the same draws: the
two readers give different clips for one seed).

Slower than the native reader (measured 2x with decord, 10x with PyAV): ``from_path`` reads the
whole file, PyAV decodes the whole stream, and every frame of the window becomes float32
before subsampling and scaling. Failures become ``UnreadableSample`` with a short reason.
"""
from __future__ import annotations

import math
import random
import re
import sys
from fractions import Fraction
from pathlib import Path

import torch

from mim.data import UnreadableSample
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.decode import _decord_reason, _is_gif, resolve_decoder
from mim.modalities.video.source import (DAMAGED, NOT_VIDEO, PAST_END, check_file, kind_of)
from mim.modalities.video.source import short as _short
from mim.modalities.video.transforms import padding, too_short

_pv = None


def pytorchvideo():
    """(EncodedVideo, RandomClipSampler, functional): imported once, after aliasing the
    ``torchvision.transforms.functional_tensor`` module pytorchvideo expects (renamed
    ``_functional_tensor`` in torchvision >= 0.17)."""
    global _pv
    if _pv is None:
        if "torchvision.transforms.functional_tensor" not in sys.modules:
            from torchvision.transforms import _functional_tensor

            sys.modules["torchvision.transforms.functional_tensor"] = _functional_tensor
        from pytorchvideo.data.clip_sampling import RandomClipSampler
        from pytorchvideo.data.encoded_video import EncodedVideo
        from pytorchvideo.transforms import functional

        _pv = EncodedVideo, RandomClipSampler, functional
    return _pv


def _fps(video) -> float:
    fps = getattr(video, "_fps", None)  # EncodedVideoDecord
    if fps is None:  # EncodedVideoPyAV
        stream = video._container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate
    if not fps or float(fps) <= 0:
        raise UnreadableSample("no frame rate in the video stream")
    return float(fps)


def open_encoded(path: Path, decoder: str):
    """``EncodedVideo`` for ``path`` (no audio); ``UnreadableSample`` with the reason."""
    EncodedVideo, _, _ = pytorchvideo()
    check_file(path)
    decoder = resolve_decoder(decoder)  # decord imported (and quietened) or PyAV instead
    decoder = "pyav" if _is_gif(path) else decoder
    try:
        return EncodedVideo.from_path(str(path), decoder=decoder, decode_audio=False)
    except Exception as exc:  # noqa: BLE001 (RuntimeError, av.error.*, decord errors)
        # pytorchvideo re-raises as "Failed to open video [name] [with Decord]. <error>"
        text = " ".join(str(exc).replace(path.name, "").split())
        text = _short(RuntimeError(re.sub(r"^Failed to open video.*?\. ", "", text)))
        text = re.sub(r"\[Errno -?\d+\] |: '<none>'$", "", text)
        if "Video stream not found" in text:
            return _raise("no video stream (audio only, or not a video)")
        if decoder == "decord":
            return _raise(_decord_reason(RuntimeError(text)))
        return _raise(f"cannot open: {text}"[:200])


def _raise(reason: str):
    raise UnreadableSample(reason, NOT_VIDEO)


def seeded_window(seed: int, clip_duration: Fraction, duration: float) -> tuple[float, float]:
    """pytorchvideo's ``RandomClipSampler`` window, made a pure function of ``seed``: the global
    ``random`` it draws from is seeded for the call and restored afterwards."""
    _, RandomClipSampler, _ = pytorchvideo()
    sampler = RandomClipSampler(clip_duration)
    state = random.getstate()
    try:
        random.seed(seed)
        info = sampler(0.0, duration, {})
    finally:
        random.setstate(state)
    return float(info.clip_start_sec), float(info.clip_end_sec)


class PyTorchVideoReader:
    """``read(path, seed, start, end) -> ([3, T, S, S] or [K, 3, T, S, S], padded)``, where
    ``padded`` says how a too-short window was filled (None: it was not); calling it returns
    the clip alone."""

    def __init__(self, cfg: VideoDataConfig):
        self.cfg = cfg
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1, 1)

    def __call__(self, path: Path, seed: int, start: float | None = None,
                 end: float | None = None) -> torch.Tensor:
        return self.read(path, seed, start, end)[0]

    def read(self, path: Path, seed: int, start: float | None = None,
             end: float | None = None) -> tuple[torch.Tensor, str | None]:
        cfg = self.cfg
        video = open_encoded(Path(path), cfg.decoder)
        try:
            fps = _fps(video)
            duration = float(video.duration)
            first = 0.0 if start is None else start
            last = duration if end is None else min(end, duration)
            if duration <= 0:
                raise UnreadableSample("no duration: an image, or a stream without frames",
                                       NOT_VIDEO)
            if first >= duration:
                raise UnreadableSample(f"start {first:g} s is past the end of the video "
                                       f"({duration:.2f} s)", PAST_END)
            clip = Fraction(cfg.span) / Fraction(fps).limit_denominator(100000)
            short = last - first < float(clip) - 0.5 / fps
            available = round((last - first) * fps)
            if short and not cfg.pad_short:
                raise too_short(available, cfg.num_frames, cfg.sampling_rate)
            root = random.Random(seed)
            rngs = [random.Random(root.getrandbits(63)) for _ in range(cfg.repeat)]
            views = [self._view(video, rng, fps, clip, first, last) for rng in rngs]
        except UnreadableSample as exc:
            raise kind_of(exc, DAMAGED)
        finally:
            close = getattr(video, "close", None)
            if close is not None:
                close()
        padded = padding(available, cfg.num_frames, cfg.sampling_rate) if short else None
        return views[0] if len(views) == 1 else torch.stack(views), padded

    def _view(self, video, rng: random.Random, fps: float, clip: Fraction, first: float,
              last: float) -> torch.Tensor:
        cfg, (_, _, F) = self.cfg, pytorchvideo()
        begin, _ = seeded_window(rng.getrandbits(63), clip, last - first)
        # the sampler's start snapped to a frame n, and the window given as n - 1/2 .. n + span
        # - 1/2 frame times: both pytorchvideo decoders (decord: ceil(fps * t) indices, PyAV:
        # pts in [start, end)) then return exactly frames n .. n + span - 1 at a constant rate
        low, high = math.ceil(first * fps - 1e-6), math.floor(last * fps + 1e-6) - cfg.span
        n = max(low, min(round((first + begin) * fps), high))
        begin, stop = max(0.0, (n - 0.5) / fps), min((n + cfg.span - 0.5) / fps, last)
        try:
            frames = video.get_clip(begin, stop)["video"]  # float [3, T, H, W] in 0..255
        except Exception as exc:  # noqa: BLE001
            raise UnreadableSample(f"decode failed: {_decord_reason(exc)}") from exc
        if frames is None or frames.ndim != 4 or frames.shape[1] < 1:
            raise UnreadableSample(f"no frames decoded in {begin:.2f}-{stop:.2f} s")
        if frames.shape[0] != 3 or frames.shape[2] < 1 or frames.shape[3] < 1:
            raise UnreadableSample(f"decoder returned frames of shape {tuple(frames.shape)}")
        x = F.uniform_temporal_subsample(frames.float(), cfg.num_frames, temporal_dim=1)
        size = cfg.input_size
        low = round(cfg.min_scale * size)
        x = F.short_side_scale(x, rng.randint(low, max(low, round(cfg.max_scale * size))))
        top = rng.randint(0, max(x.shape[2] - size, 0))
        left = rng.randint(0, max(x.shape[3] - size, 0))
        x = x[:, :, top:top + size, left:left + size]
        if rng.random() < cfg.hflip:
            x = x.flip(-1)
        x = F.div_255(x)
        return ((x - self.mean) / self.std).contiguous()
