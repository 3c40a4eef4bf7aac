"""``data`` settings of the audio modality: sound files -> Kaldi log mel filterbanks.

The pipeline (``dataset.py``): the file's header (``decode.probe``) -> a window of the clip's
length at a random offset (seeded), read alone (a 3-hour file is never decoded whole) -> mixed
down (or ``channels`` kept) and resampled to ``sample_rate`` -> optional random gain ->
``fbank.fbank`` (AudioMAE's: 25 ms Hann window, 10 ms shift, pre-emphasis 0.97, no dither,
no energy) -> ``(fbank - mean) / (2 std)`` as AudioMAE normalises -> ``[C, frames, mel]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from mim.modalities.audio.fbank import frame_sizes

# AudioSet's filterbank statistics, as AudioMAE (and AST before it) normalise with them
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
FRAME_SHIFT_MS = 10.0  # Kaldi's frame shift (AudioMAE's)
FRAME_LENGTH_MS = 25.0  # Kaldi's window (AudioMAE's)


@dataclass
class AudioDataConfig:
    root: Optional[str] = None  # a folder searched recursively; None: the built-in demo sounds
    # a list file of 'path [label] [start_sec end_sec]' lines (paths relative to its folder);
    # None: data.root
    list_file: Optional[str] = None
    sample_rate: int = 16000  # every file is resampled to this rate (Hz)
    # 1: mixed down to mono (AudioMAE); k > 1: the first k channels kept (a file with fewer is
    # skipped)
    channels: int = 1
    num_frames: int = 1024  # filterbank frames per clip (a 25 ms window every 10 ms: 10.255 s)
    # the clip's length in seconds; sets num_frames (its seconds / 10 ms, rounded); None: keep
    # num_frames
    duration: Optional[float] = None
    num_mel_bins: int = 128  # mel bins of the filterbank (AudioMAE: 128)
    # filterbank normalisation (fbank - mean) / (2 std), AudioMAE's scaling; defaults:
    # AudioSet's statistics; auto: computed over data.stats_files files of the data
    mean: Any = AUDIOSET_MEAN
    std: Any = AUDIOSET_STD  # as data.mean
    stats_files: int = 64  # files read for data.mean / data.std = auto (evenly spaced)
    # a file shorter than a clip is padded with silence at its end and counted as padded;
    # false: such files are skipped (and counted)
    pad_short: bool = True
    skip_silent: bool = False  # skip (and count) files whose clip is digital silence
    # random gain in dB, drawn uniformly in [-gain_db, gain_db] per clip; 0: none
    gain_db: float = 0.0
    # none | folders (one folder per class under data.root) | a CSV of 'relative/path,label'
    # (several labels of a file: 'path,"a;b"'); a list file carries its own labels
    labels: str = "none"

    def __post_init__(self) -> None:
        if self.duration is not None:
            if not math.isfinite(self.duration) or self.duration <= 0:
                raise ValueError(f"data.duration: seconds > 0 or null, got {self.duration}")
            self.num_frames = frames_of(self.duration)
        for key in ("sample_rate", "channels", "num_frames", "num_mel_bins", "stats_files"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}: must be >= 1, got {getattr(self, key)}")
        if self.sample_rate < 4000:
            raise ValueError(f"data.sample_rate: at least 4000 Hz (the filterbank's 20 Hz "
                             f"lower edge and 25 ms window), got {self.sample_rate}")
        check_stat("mean", self.mean)
        check_stat("std", self.std)
        if self.std != "auto" and float(self.std) <= 0:
            raise ValueError(f"data.std: must be > 0 or auto, got {self.std}")
        if not math.isfinite(self.gain_db) or self.gain_db < 0:
            raise ValueError(f"data.gain_db: decibels >= 0, got {self.gain_db}")
        if self.root and self.list_file:
            raise ValueError("data.root / data.list_file: give one of them, not both")

    @property
    def clip_samples(self) -> int:
        """Samples (at ``sample_rate``) whose filterbank has ``num_frames`` frames exactly."""
        return clip_samples(self.num_frames, self.sample_rate)

    @property
    def seconds(self) -> float:
        return self.clip_samples / self.sample_rate


def frames_of(seconds: float) -> int:
    """Filterbank frames of a clip of ``seconds`` (10 ms each, rounded; at least 1)."""
    return max(1, round(seconds * 1000.0 / FRAME_SHIFT_MS))


def clip_samples(num_frames: int, sample_rate: int) -> int:
    """Kaldi's framing (snip_edges): ``num_frames`` frames need (frames - 1) shifts + 1 window
    (1024 frames at 16 kHz: 164,080 samples, 10.255 s)."""
    window, shift, _ = frame_sizes(sample_rate, FRAME_LENGTH_MS, FRAME_SHIFT_MS)
    return (num_frames - 1) * shift + window


def check_stat(key: str, value: Any) -> None:
    if value == "auto":
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"data.{key}: a number or auto, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"data.{key}: must be finite, got {value!r}")
