"""Sound items from a folder, a list file or the built-in demo -> normalised filterbanks.

A folder is searched recursively for audio suffixes (``decode.AUDIO_EXTENSIONS``); a list file
has ``path [label] [start_sec end_sec]`` lines (``mim/data/listfile.py``), which may also name
videos (their audio stream is read). Each load reads the file's header, draws the clip's
window from the sample's seed (uniform over the file, or over the listed window), reads that
window alone, and turns it into ``[C, frames, mel]`` (``Features``). A file shorter than a clip
is padded with silence at its end and reported (``Sample.padded``), or skipped under
``data.pad_short=false``; unreadable files raise ``UnreadableSample`` (``decode.py``), which the
core replaces and reports with path and reason.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mim.data import MimDataset, UnreadableSample
from mim.data.files import file_labels, find_files
from mim.data.stats import sample_indices
from mim.data.listfile import ListedItem, read_list
from mim.modalities.audio.config import AudioDataConfig
from mim.modalities.audio.decode import (AUDIO_EXTENSIONS, clip_window, is_audio_file, probe,
                                         read_clip)
from mim.modalities.audio.fbank import fbank

log = logging.getLogger("mim.data")

SHORT = "shorter than a clip"
SILENT = "digital silence"


class Features:
    """A clip's wave ``[C, N]`` at the run's rate -> ``[C, frames, mel]``, normalised as
    AudioMAE normalises: ``(fbank - mean) / (2 std)``, the wave's mean removed first."""

    def __init__(self, cfg: AudioDataConfig):
        self.cfg = cfg

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        wave = wave - wave.mean(dim=1, keepdim=True)  # [C, N], AudioMAE's DC removal
        banks = fbank(wave, cfg.sample_rate, cfg.num_mel_bins)  # [C, frames, mel]
        return (banks - float(cfg.mean)) / (2.0 * float(cfg.std))

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of the normalisation: model values -> log mel energies, same shape."""
        return x * (2.0 * float(self.cfg.std)) + float(self.cfg.mean)


def fit_length(wave: torch.Tensor, samples: int) -> tuple[torch.Tensor, int]:
    """``wave [C, N]`` cut or padded with silence at its end to ``samples``; (wave, padding)."""
    missing = samples - wave.shape[1]
    if missing <= 0:
        return wave[:, :samples], 0
    return F.pad(wave, (0, missing)), missing  # [C, samples]


class AudioDataset(MimDataset):
    def __init__(self, items: list[ListedItem], cfg: AudioDataConfig,
                 classes: list[str] | None = None, position: float | None = None,
                 gain: bool = True):
        """``position``: where in its file a clip is taken (0 start, 1 end) for a deterministic
        test view; None: drawn from the seed. ``gain``: apply ``data.gain_db``."""
        self.items, self.cfg, self.classes = items, cfg, classes or []
        self.position, self.gain = position, gain
        self.features = Features(cfg)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def describe(self, index: int) -> str:
        item = self.items[index]
        if item.start is None:
            return str(item.path)
        return f"{item.path} [{item.start:g}-{item.end:g} s]"

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        return self.load_padded(index, seed)[:2]

    def load_padded(self, index: int, seed: int) -> tuple[torch.Tensor, int, str | None]:
        """One clip ``[C, frames, mel]``, its label, and how it was padded (None: it was not)."""
        item, cfg = self.items[index], self.cfg
        rng = np.random.default_rng(seed)
        wave, rate_seconds = self._wave(item, rng)
        if cfg.skip_silent and not bool(wave.abs().max() > 0):
            raise UnreadableSample("the clip is digital silence (data.skip_silent=true)", SILENT)
        wave, missing = fit_length(wave, cfg.clip_samples)
        if self.gain and cfg.gain_db > 0:
            wave = wave * 10.0 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20.0)
        how = None
        if missing:
            how = (f"{rate_seconds:.2f} s of a {cfg.seconds:.2f} s clip, padded with silence")
        return self.features(wave), item.label, how

    def _wave(self, item: ListedItem, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
        """The clip's window read at the run's rate ``[C, N]`` and the seconds the file gave."""
        info = probe(item.path)
        first, last = self._span(item, info)
        u = rng.random() if self.position is None else self.position
        start, frames, short = clip_window(last - first, info.sample_rate, self.cfg.seconds, u)
        if short and not self.cfg.pad_short:
            raise UnreadableSample(
                f"{(last - first) / info.sample_rate:.2f} s, shorter than a "
                f"{self.cfg.seconds:.2f} s clip (data.pad_short=false skips it)", SHORT)
        wave = read_clip(item.path, info, first + start, frames, self.cfg.sample_rate,
                         self.cfg.channels)
        return wave, frames / info.sample_rate

    @staticmethod
    def _span(item: ListedItem, info) -> tuple[int, int]:
        """The part of the file a list file's window allows, in the file's samples."""
        if item.start is None:
            return 0, info.frames
        first = math.floor(item.start * info.sample_rate)
        last = min(info.frames, math.ceil(item.end * info.sample_rate))
        if first >= info.frames or last - first < 2:
            raise UnreadableSample(f"the listed window {item.start:g}-{item.end:g} s lies past "
                                   f"the end ({info.frames / info.sample_rate:.2f} s)",
                                   "window past the end")
        return first, last


def scan(root: Path) -> list[Path]:
    return find_files(root, is_audio_file,
                      f"sound files (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")


def items_of(cfg: AudioDataConfig, how: str | None = None
             ) -> tuple[list[ListedItem], list[str], str]:
    """(items, class names, where they came from) of ``data.list_file``, ``data.root`` (labels
    by ``how``, default ``data.labels``) or the built-in demo."""
    if cfg.list_file:
        items, classes = read_list(Path(cfg.list_file).expanduser(), what="sound files")
        return items, classes, cfg.list_file
    if cfg.root:
        root = Path(cfg.root).expanduser()
        files = scan(root)
        labels, classes = file_labels(files, root, how or cfg.labels)
        return [ListedItem(f, label) for f, label in zip(files, labels)], classes, str(root)
    from mim.modalities.audio.demo import demo_items

    items, classes, folder = demo_items()
    return items, classes, f"{folder} (built-in demo sounds)"


def resolve_data(cfg: AudioDataConfig) -> AudioDataConfig:
    """``data.mean`` / ``data.std = auto``: the filterbank's mean and std over the middle clip
    of ``data.stats_files`` files spread over the data (unreadable ones skipped and said);
    validation's hook, so the run's config holds the numbers."""
    if "auto" not in (cfg.mean, cfg.std):
        return cfg
    items, _, source = items_of(cfg)
    raw = AudioDataset(items, dataclasses.replace(cfg, mean=0.0, std=0.5), position=0.5,
                       gain=False)  # (fbank - 0) / (2 * 0.5): the log energies themselves
    total = squares = count = 0.0
    skipped = []
    for index in sample_indices(len(items), cfg.stats_files):
        try:
            x = raw.load(index, 0)[0].double()  # [C, frames, mel]
        except UnreadableSample as exc:
            skipped.append(f"{raw.describe(index)}: {exc}")
            continue
        total, squares, count = total + x.sum().item(), squares + (x ** 2).sum().item(), \
            count + x.numel()
    if not count:
        raise FileNotFoundError(f"data.mean / data.std = auto: no readable file among "
                                f"{min(len(items), cfg.stats_files)} of {source}")
    mean = total / count
    std = math.sqrt(max(squares / count - mean ** 2, 0.0))
    if std <= 0:
        raise ValueError("data.std = auto: the filterbanks are constant; set data.std")
    log.info("data.mean / data.std = auto: %.4f / %.4f over %d files%s", mean, std,
             min(len(items), cfg.stats_files) - len(skipped),
             f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else "")
    return dataclasses.replace(cfg, mean=mean if cfg.mean == "auto" else cfg.mean,
                               std=std if cfg.std == "auto" else cfg.std)


def build_dataset(cfg: AudioDataConfig) -> AudioDataset:
    items, classes, source = items_of(cfg)
    log.info("audio data: %d items from %s, %.2f s clips at %d Hz -> [%d, %d, %d]", len(items),
             source, cfg.seconds, cfg.sample_rate, cfg.channels, cfg.num_frames,
             cfg.num_mel_bins)
    return AudioDataset(items, cfg, classes)
