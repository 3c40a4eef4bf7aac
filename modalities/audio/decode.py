"""Reading sound: a file's header, then one window of it, resampled and mixed down.

``probe`` reads only the header: libsndfile through soundfile for what it opens (WAV, FLAC,
OGG, MP3, AIFF, ...), PyAV for the rest (M4A, AAC, Opus, WMA and the audio stream of a video).
``read_clip`` reads the window it is given and nothing else: soundfile seeks to its first
sample, PyAV seeks to the keyframe before it and decodes from there, so a 3-hour file costs a
clip. The window is resampled with ``scipy.signal.resample_poly`` (polyphase, Kaiser-windowed:
anti-aliased) and mixed down to mono or cut to ``channels``. A file that cannot be used raises
``UnreadableSample`` with one line and a kind (the constants below).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mim.data import UnreadableSample
from mim.data.files import EMPTY, MISSING, check_file  # noqa: F401  (kinds re-exported)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus",
                              ".wma", ".aif", ".aiff"})
NOT_AUDIO = "not audio (cannot be opened)"
NO_STREAM = "no audio stream"
DAMAGED = "truncated or corrupt"
NOT_FINITE = "NaN or Inf samples"
TOO_SHORT = "too short"
FEW_CHANNELS = "fewer channels than data.channels"


def is_audio_file(name: str) -> bool:
    """A name with an audio suffix (the rule of a folder and of ``mim data pack``)."""
    return not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS


@dataclass(frozen=True)
class AudioInfo:
    frames: int  # samples per channel, in the file's rate
    sample_rate: int
    channels: int
    backend: str  # soundfile | pyav


def _line(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)  # av's errors are OSErrors
    return (" ".join((strerror or str(exc)).split()) or type(exc).__name__)[:200]


def _probe_soundfile(path: Path) -> AudioInfo | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None  # not a format libsndfile opens: PyAV may
    _check_length(info.extra_info)
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels), "soundfile")


def _check_length(log: str) -> None:
    """libsndfile reads a WAV cut short as the shorter file it is and says so in its log
    ('data : 64000 (should be 7961)'): such a file is truncated, not a short sound."""
    for line in log.splitlines():
        found = re.match(r"\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if found and int(found.group(2)) < int(found.group(1)):
            raise UnreadableSample(f"truncated: its header promises {found.group(1)} bytes of "
                                   f"samples, the file holds {found.group(2)}", DAMAGED)


def _probe_pyav(path: Path) -> AudioInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UnreadableSample("the file has no audio stream", NO_STREAM)
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            channels = int(stream.codec_context.channels or 1)
    except UnreadableSample:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UnreadableSample(f"cannot be opened as sound: {_line(exc)}", NOT_AUDIO) from exc
    if rate <= 0:
        raise UnreadableSample("the audio stream has no sample rate", NOT_AUDIO)
    return AudioInfo(int(round(seconds * rate)), rate, channels, "pyav")


def probe(path: Path) -> AudioInfo:
    """The header of ``path``; UnreadableSample where it is no usable sound."""
    path = Path(path)
    check_file(path, NOT_AUDIO)
    info = _probe_soundfile(path) or _probe_pyav(path)
    if info.frames < 2:
        raise UnreadableSample(f"{info.frames} sample(s): too short to be a sound", TOO_SHORT)
    return info


def clip_window(total: int, rate: int, seconds: float, u: float) -> tuple[int, int, bool]:
    """(start, frames, short) in the file's samples: a window of ``seconds`` (rounded up) at
    ``u`` in [0, 1) of the room the file leaves; the whole file where it is shorter."""
    frames = math.ceil(seconds * rate)
    if total <= frames:
        return 0, total, total < frames
    return int(u * (total - frames + 1)) if u < 1 else total - frames, frames, False


def _read_soundfile(path: Path, start: int, frames: int) -> np.ndarray:
    import soundfile as sf

    try:
        data = sf.read(str(path), start=start, frames=frames, dtype="float32",
                       always_2d=True)[0]  # [N, C]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UnreadableSample(f"decoding failed: {_line(exc)}", DAMAGED) from exc
    return data.T  # [C, N]


def _read_pyav(path: Path, rate: int, start: int, frames: int) -> np.ndarray:
    import av

    chunks, first = [], None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            if start > 0:  # to the keyframe at or before the window, in the stream's time base
                container.seek(int(start / rate / stream.time_base), stream=stream,
                               backward=True, any_frame=False)
            for frame in container.decode(stream):
                at = (round(float(frame.pts * stream.time_base) * rate)
                      if frame.pts is not None else (first or 0) + sum(c.shape[1] for c in chunks))
                data = frame.to_ndarray().astype(np.float32)  # [C, n] or [1, n * C] packed
                if not frame.format.is_planar:
                    data = data.reshape(-1, len(frame.layout.channels)).T  # [C, n]
                first = at if first is None else first
                chunks.append(data)
                if at + data.shape[1] >= start + frames:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UnreadableSample(f"decoding failed: {_line(exc)}", DAMAGED) from exc
    if not chunks:
        raise UnreadableSample("no audio could be decoded", DAMAGED)
    wave = np.concatenate(chunks, axis=1)  # [C, n], from sample ``first``
    skip = max(0, start - first)
    return wave[:, skip:skip + frames]


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[C, N] at ``from_rate`` -> [C, ceil(N * to / from)] at ``to_rate`` (polyphase,
    Kaiser-windowed low-pass: anti-aliased)."""
    if from_rate == to_rate:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    return resample_poly(wave, to_rate // g, from_rate // g, axis=1).astype(np.float32)


def _channels(wave: np.ndarray, channels: int | None) -> np.ndarray:
    """[C, N] -> [1, N] mixed down (``channels`` None or 1) or the first ``channels``."""
    if channels is None or channels == 1:
        return wave.mean(axis=0, keepdims=True)
    if wave.shape[0] < channels:
        raise UnreadableSample(f"{wave.shape[0]} channel(s) but data.channels is {channels}",
                               FEW_CHANNELS)
    return wave[:channels]


def read_clip(path: Path, info: AudioInfo, start: int, frames: int, sample_rate: int,
              channels: int | None = 1) -> torch.Tensor:
    """Samples ``start`` .. ``start + frames`` of ``path`` (in its own rate) -> float32
    ``[channels, ~frames * sample_rate / info.sample_rate]`` at ``sample_rate``."""
    path = Path(path)
    if info.backend == "soundfile":
        wave = _read_soundfile(path, start, frames)
    else:
        wave = _read_pyav(path, info.sample_rate, start, frames)
    if wave.shape[1] < min(frames, 2):
        raise UnreadableSample(f"{wave.shape[1]} of the {frames} samples its header promises "
                               f"from sample {start} could be read", DAMAGED)
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise UnreadableSample(f"contains NaN or Inf ({bad} of {wave.size} samples of the "
                               "clip)", NOT_FINITE)
    wave = _channels(wave, channels)
    return torch.from_numpy(np.ascontiguousarray(resample(wave, info.sample_rate, sample_rate)))
