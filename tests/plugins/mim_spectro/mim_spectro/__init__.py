"""``mim-spectro``: a spectrogram modality for mim, registered through the plugin API only.

Samples are single-channel 2D arrays (frequency x time) read from ``.npy`` files under
``data.root``; without a root, a few synthetic spectrograms (harmonic stacks with gliding
pitch, onsets and a noise floor) are generated into a cache folder. Each sample is a random
time window, resized to ``input_size`` x ``input_size``, optionally log-compressed, then
normalised. mim's ``patch2d`` tokenizer cuts it into patches (``in_chans`` = 1 from
``sample_shape``).

Imported by ``mim.plugins.load_plugins`` via the entry point ``mim.plugins: spectro``.
"""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mim.data import MimDataset, UnreadableSample
from mim.registry import MODALITIES, add_config_dir
from mim.spec import ModalitySpec, Panels

__version__ = "0.1.0"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
GAP = 2  # white pixels between picture tiles


@dataclass
class SpectroDataConfig:
    root: Optional[str] = None  # a folder of .npy files, searched recursively; None: demo data
    input_size: int = 32  # samples are input_size x input_size (frequency x time)
    log_scale: bool = True  # log1p(max(x, 0)) before normalising (magnitude spectrograms)
    normalize: str = "sample"  # sample: zero mean, unit std per sample | fixed: (x - mean) / std
    mean: float = 0.0  # used by normalize=fixed
    std: float = 1.0
    demo_items: int = 24  # number of synthetic spectrograms when root is None

    def __post_init__(self) -> None:
        if self.input_size < 2:
            raise ValueError(f"data.input_size: must be >= 2, got {self.input_size}")
        if self.normalize not in ("sample", "fixed"):
            raise ValueError(f"data.normalize: '{self.normalize}' is not one of: sample, fixed")
        if self.std <= 0:
            raise ValueError(f"data.std: must be > 0, got {self.std}")
        if self.demo_items < 1:
            raise ValueError(f"data.demo_items: must be >= 1, got {self.demo_items}")


def _demo_spectrogram(index: int, bins: int = 64, frames: int = 96) -> np.ndarray:
    """A synthetic magnitude spectrogram [bins, frames]: harmonics of a gliding pitch."""
    rng = np.random.default_rng(index)
    t = np.arange(frames)
    f0 = rng.uniform(3, 9) + rng.uniform(1, 3) * np.sin(2 * np.pi * t / frames
                                                       * rng.uniform(0.5, 2) + rng.uniform(0, 6))
    freq = np.arange(bins)[:, None]  # [bins, 1]
    spec = np.zeros((bins, frames))
    for k in range(1, 8):
        spec += np.exp(-0.5 * ((freq - k * f0[None, :]) / 0.8) ** 2) / k
    for onset in rng.integers(0, frames, size=rng.integers(1, 4)):
        spec[:, onset] += np.exp(-freq[:, 0] / rng.uniform(10, 40))  # broadband click
    spec += rng.exponential(0.02, size=spec.shape)  # noise floor
    return (spec * rng.uniform(0.5, 5)).astype(np.float32)


def demo_dir(items: int) -> Path:
    """Writes the demo spectrograms once (atomically, so concurrent runs are safe)."""
    folder = Path(tempfile.gettempdir()) / f"mim_spectro_demo_v1_{items}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(items):
        path = folder / f"demo_{i:03d}.npy"
        if not path.exists():
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, _demo_spectrogram(i))
            os.replace(tmp, path)
    return folder


def scan(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    files = sorted(p for p in root.rglob("*.npy") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"data.root: no .npy files under {root}")
    return files


class SpectroFolder(MimDataset):
    def __init__(self, files: list[Path], cfg: SpectroDataConfig):
        self.files, self.cfg = files, cfg

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # truncated, empty, pickled objects, not .npy at all
            raise UnreadableSample(f"{type(exc).__name__}: {exc}") from exc
        if array.ndim != 2 or min(array.shape) < 1:
            raise UnreadableSample(f"expected a 2D array (frequency x time), got {array.shape}")
        if np.iscomplexobj(array):
            array = np.abs(array)
        if not np.issubdtype(array.dtype, np.number):
            raise UnreadableSample(f"not numeric: dtype {array.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))  # [F, T]
        if not torch.isfinite(x).all():
            raise UnreadableSample("contains NaN or Inf")
        # a random time window (seeded per sample), as wide as the array is tall
        rng = random.Random(seed)
        bins, frames = x.shape
        width = min(frames, bins)
        start = rng.randint(0, frames - width)
        x = x[:, start:start + width]
        size = self.cfg.input_size
        x = F.interpolate(x[None, None], size=(size, size), mode="bilinear",
                          align_corners=False)[0]  # [1, H, W]
        if self.cfg.log_scale:
            x = torch.log1p(x.clamp_min(0))
        if self.cfg.normalize == "sample":
            x = (x - x.mean()) / (x.std() + 1e-6)
        else:
            x = (x - self.cfg.mean) / self.cfg.std
        return x, -1


def build_dataset(cfg: SpectroDataConfig) -> SpectroFolder:
    root = Path(cfg.root).expanduser() if cfg.root else demo_dir(cfg.demo_items)
    return SpectroFolder(scan(root), cfg)


def sample_shape(cfg: SpectroDataConfig) -> tuple[int, int, int]:
    return (1, cfg.input_size, cfg.input_size)  # (C, H, W)


def render(panels: Panels, cfg: SpectroDataConfig, stem: Path) -> Path:
    """Grayscale PNG: one row per sample, columns original | masked | reconstruction | pasted.

    Each row is scaled by its original's range; low frequencies at the bottom.
    """
    columns = [c.detach().float().cpu() for c in (panels.original, panels.masked,
                                                   panels.reconstruction, panels.pasted)]
    n, _, h, w = columns[0].shape
    canvas = torch.ones(n * (h + GAP) - GAP, len(columns) * (w + GAP) - GAP)
    for row in range(n):
        low, high = columns[0][row].min(), columns[0][row].max()
        for col, tiles in enumerate(columns):
            tile = ((tiles[row, 0] - low) / (high - low + 1e-6)).clamp(0, 1).flip(0)
            top, left = row * (h + GAP), col * (w + GAP)
            canvas[top:top + h, left:left + w] = tile
    pixels = (canvas.numpy() * 255).round().astype(np.uint8)
    path = stem.with_suffix(".png")
    Image.fromarray(pixels).save(path)  # uint8 [H, W]: mode L
    return path


SPEC = ModalitySpec(
    name="spectro",
    data_config=SpectroDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
)
MODALITIES.register("spectro", obj=SPEC)
add_config_dir(str(CONFIG_DIR))

__all__ = ["SPEC", "SpectroDataConfig", "SpectroFolder"]
