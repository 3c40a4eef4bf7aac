"""Audio reconstruction pictures: spectrograms of original | masked | reconstruction | pasted.

Each sample gets four stacked rows, time running right and frequency up (the lowest mel bin at
the bottom), in a perceptual dark-to-bright colour map (an inferno-like ramp) over one display
range per sample (the 1st-99th percentile of its original), so the rows compare. The masked
row shows the hidden patches in gray (the panel holds them as exact zeros). Channel 0 is shown.
Short grids are enlarged so that a tile is at least ``MIN_HEIGHT`` pixels high.

``mim visualize ... visualize.audio=true`` also writes each sample's original, reconstruction
and pasted rows as sound (``<stem>_<sample>_<row>.wav``, 16-bit PCM at ``data.sample_rate``):
the normalisation undone (``Features.log_mel``), then the filterbank inverted by Griffin-Lim
(``fbank.to_wave``, ``visualize.iterations`` rounds), so what the model heard can be listened to
(AudioMAE issue #28). The phase is estimated and the detail within each mel band lost, so even
the original row sounds coarser than the file; compare the rows with each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from mim.modalities.audio.config import AudioDataConfig
from mim.modalities.audio.dataset import Features
from mim.modalities.audio.fbank import to_wave
from mim.spec import Panels

SOUND_ROWS = ("original", "reconstruction", "pasted")  # the rows written as sound

GAP = 2  # pixels between rows
SAMPLE_GAP = 8  # extra pixels between samples
MIN_HEIGHT = 96
BACKGROUND = 255
MASKED_GRAY = 128
# an inferno-like ramp: black, purple, red, orange, pale yellow (RGB at 0, .25, .5, .75, 1)
RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                np.float64)


def colours(values: np.ndarray) -> np.ndarray:
    """[...] in [0, 1] -> uint8 [..., 3] on ``RAMP`` (linear between its stops)."""
    stops = np.linspace(0.0, 1.0, len(RAMP))
    rgb = [np.interp(values, stops, RAMP[:, k]) for k in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def _display_range(spectrogram: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(spectrogram, [1.0, 99.0])
    return float(low), float(max(high, low + 1e-6))


def spectrogram_tile(values: np.ndarray, low: float, high: float, scale: int,
                     hidden: np.ndarray | None = None) -> np.ndarray:
    """[frames, mel] -> uint8 [mel * scale, frames * scale, 3], frequency up; ``hidden``
    [frames, mel] marks values shown gray."""
    rgb = colours(np.clip((values - low) / (high - low), 0.0, 1.0))  # [frames, mel, 3]
    if hidden is not None:
        rgb[hidden] = MASKED_GRAY
    rgb = rgb.transpose(1, 0, 2)[::-1]  # [mel, frames, 3], the lowest bin at the bottom
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


@dataclass
class VisualizeOptions:
    """``mim visualize`` keys of the audio modality (``visualize.*``)."""

    audio: bool = False  # also write the rows as sound (WAV)
    iterations: int = 32  # Griffin-Lim rounds per sound

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"visualize.iterations: must be >= 1, got {self.iterations}")


def write_sounds(panels: Panels, cfg: AudioDataConfig, stem: Path, iterations: int
                 ) -> list[Path]:
    """Each sample's ``SOUND_ROWS`` (channel 0) as 16-bit WAV files beside ``stem``."""
    features, paths = Features(cfg), []
    for row in SOUND_ROWS:
        values = getattr(panels, row)[:, 0].float()  # [N, frames, mel]
        for i, x in enumerate(values):
            wave = to_wave(features.log_mel(x), cfg.sample_rate, iterations)  # [samples]
            path = stem.with_name(f"{stem.name}_{i:02d}_{row}.wav")
            soundfile.write(path, wave.numpy(), cfg.sample_rate, subtype="PCM_16")
            paths.append(path)
    return paths


def render(panels: Panels, cfg: AudioDataConfig, stem: Path,
           options: VisualizeOptions | None = None) -> Path:
    columns = [panels.original, panels.masked, panels.reconstruction, panels.pasted]
    columns = [c[:, 0].float().numpy() for c in columns]  # each [N, frames, mel], channel 0
    n, frames, mel = columns[0].shape
    scale = max(1, -(-MIN_HEIGHT // mel))  # ceil
    tile_h, width = mel * scale, frames * scale
    height = n * len(columns) * (tile_h + GAP) - GAP + (n - 1) * SAMPLE_GAP
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for i in range(n):
        low, high = _display_range(columns[0][i])
        for row, column in enumerate(columns):
            hidden = column[i] == 0.0 if row == 1 else None
            top = (i * len(columns) + row) * (tile_h + GAP) + i * SAMPLE_GAP
            canvas[top:top + tile_h] = spectrogram_tile(column[i], low, high, scale, hidden)
    path = stem.with_suffix(".png")
    Image.fromarray(canvas).save(path)
    if options is not None and options.audio:
        write_sounds(panels, cfg, stem, options.iterations)
    return path

