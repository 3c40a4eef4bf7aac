"""Built-in demo sounds: synthetic clips of five kinds, generated once (deterministically).

Kinds, the label of each clip (its folder):

* ``tone``: one steady partial with a slow vibrato and a soft attack and release;
* ``chirp``: a partial gliding up or down one to three octaves, once or twice;
* ``harmonic``: a harmonic stack (4-8 partials, amplitudes 1/k) on a held pitch;
* ``noise``: one to three bursts of band-limited noise;
* ``rhythm``: short tone blips repeated at 3-8 per second.

Every kind draws its pitch from the same range (150-2400 Hz, log-uniform) and its level from
the same range, over a faint noise floor, so neither the pitch nor the loudness tells the kinds
apart: the patterns in time and frequency do. Clips last 3-4 s, so a 2.56 s clip is drawn at a
random offset. To exercise the readers they are written as WAV (16-bit, 16 kHz), FLAC
(22.05 kHz, stereo: the same sound in both channels at different levels) and OGG Vorbis
(44.1 kHz), by turns. Layout, in ``$MIM_CACHE_DIR/demo_audio/<VERSION>/``::

    train/<kind>/clip_XXX.{wav,flac,ogg}   TRAIN_PER_KIND clips of each kind (pretraining, and
                                           mim eval's training split)
    val/<kind>/clip_XXX.*                  VAL_PER_KIND held-out clips of each kind

The set is written once into a temporary sibling and published by an atomic rename
(``mim/data/cache.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mim.data.cache import cache_root, written_once
from mim.data.files import find_files, label_ids
from mim.data.listfile import ListedItem

VERSION = "v1"
KINDS = ("chirp", "harmonic", "noise", "rhythm", "tone")
TRAIN_PER_KIND, VAL_PER_KIND = 24, 8
RATE = 16000  # the synthesis rate; files are written at their format's rate
FORMATS = (("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1))  # suffix, rate, channels
PITCH = (150.0, 2400.0)  # Hz, log-uniform, every kind


def cache_dir() -> Path:
    return cache_root() / "demo_audio"


def _pitch(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(PITCH[0]), np.log(PITCH[1]))))


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    env[n - release:] = np.linspace(1, 0, release)
    return env


def _partial(freq: np.ndarray) -> np.ndarray:
    """A sine whose frequency follows ``freq`` [N] (Hz per sample)."""
    return np.sin(2 * np.pi * np.cumsum(freq) / RATE)


def _tone(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    f0 = _pitch(rng)
    vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    return _partial(f0 * vibrato) * _envelope(n, RATE // 20, RATE // 10)


def _chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    sweeps = int(rng.integers(1, 3))
    octaves = rng.uniform(1, 3) * rng.choice([-1, 1])
    phase = (np.arange(n) * sweeps / n) % 1.0  # [N], 0..1 within each sweep
    start = _pitch(rng) / (2 ** max(octaves, 0))  # the glide stays within reach of the range
    return _partial(start * 2 ** (octaves * phase)) * _envelope(n, RATE // 50, RATE // 20)


def _harmonic(rng: np.random.Generator, n: int) -> np.ndarray:
    f0 = _pitch(rng) / 2
    partials = [(k, 1 / k) for k in range(1, int(rng.integers(4, 9)) + 1) if k * f0 < RATE / 2.2]
    wave = sum(a * _partial(np.full(n, k * f0)) for k, a in partials)
    return wave * _envelope(n, RATE // 20, RATE // 10)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    wave = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.uniform(0.2, 0.8) * RATE)
        start = int(rng.integers(0, n - length))
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1 / RATE)
        centre, width = _pitch(rng), rng.uniform(0.3, 1.0)  # width in octaves
        spectrum *= np.exp(-0.5 * (np.log2(np.maximum(freqs, 1) / centre) / width) ** 2)
        burst = np.fft.irfft(spectrum, length)
        wave[start:start + length] += burst / (np.abs(burst).max() + 1e-9)
    return wave


def _rhythm(rng: np.random.Generator, n: int) -> np.ndarray:
    period = int(RATE / rng.uniform(3, 8))
    blip = int(0.03 * RATE)
    f0 = _pitch(rng)
    gate = (np.arange(n) % period) < blip  # [N], on for the first 30 ms of each beat
    return _partial(np.full(n, f0)) * gate * np.hanning(blip)[np.arange(n) % period % blip]


SYNTHS = {"chirp": _chirp, "harmonic": _harmonic, "noise": _noise, "rhythm": _rhythm,
          "tone": _tone}


def sound(kind: str, split: str, index: int) -> np.ndarray:
    """One demo clip, float32 [N] at ``RATE``, peak below 1."""
    seed = (KINDS.index(kind), ("train", "val").index(split), index)
    rng = np.random.default_rng(seed)
    n = int(rng.uniform(3.0, 4.0) * RATE)
    wave = SYNTHS[kind](rng, n)
    wave = wave / (np.abs(wave).max() + 1e-9) * 10 ** (rng.uniform(-18, -3) / 20)
    return (wave + 10 ** (-50 / 20) * rng.standard_normal(n)).astype(np.float32)


def _write(path: Path, wave: np.ndarray, rate: int, channels: int) -> None:
    import soundfile as sf

    from mim.modalities.audio.decode import resample

    wave = resample(wave[None], RATE, rate)[0]  # the reader's resampler, [N] at ``rate``
    if channels == 2:
        wave = np.stack([wave, 0.5 * wave], axis=1)  # [N, 2]
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[path.suffix[1:]]
    sf.write(str(path), np.clip(wave, -1, 1), rate, subtype=subtype)


def _write_set(root: Path) -> None:
    for split, count in (("train", TRAIN_PER_KIND), ("val", VAL_PER_KIND)):
        for kind in KINDS:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for index in range(count):
                suffix, rate, channels = FORMATS[index % len(FORMATS)]
                _write(folder / f"clip_{index:03d}.{suffix}", sound(kind, split, index), rate,
                       channels)


def demo_folder() -> Path:
    """The demo set's version folder (``train/``, ``val/``), written on first use."""
    total = (TRAIN_PER_KIND + VAL_PER_KIND) * len(KINDS)
    return written_once(cache_dir() / VERSION, _write_set,
                        f"demo audio: wrote {total} synthetic sounds")


def split_files(split: str) -> tuple[list[Path], list[int]]:
    """(files, kind ids) of a split of the demo set."""
    from mim.modalities.audio.decode import is_audio_file

    root = demo_folder() / split
    files = find_files(root, is_audio_file, "demo sounds")
    labels, _ = label_ids([f.parent.name for f in files], list(KINDS))
    return files, labels


def demo_items() -> tuple[list[ListedItem], list[str], Path]:
    """The training split's items (labelled by kind), the kinds, and the folder."""
    files, labels = split_files("train")
    return [ListedItem(f, label) for f, label in zip(files, labels)], list(KINDS), \
        demo_folder() / "train"
