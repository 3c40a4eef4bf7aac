"""Guarantee: the data pipeline's memory is bounded under load. Several loader workers with
repeated sampling (K=4 clips per decoded video) feed a few thousand clips of the built-in demo
videos; the resident memory of the process and its workers, sampled at every epoch end after the
first, may not grow by more than ``BOUND_MB`` (the first epoch warms caches and allocators).
"""
from __future__ import annotations

import psutil
import pytest

from mim.config.compose import load
from mim.registry import load_plugins
from mim.stream import make_stream
from mim.train import _feeds, _sources
from mim.models import build_tokenizer

pytestmark = pytest.mark.e2e

CLIPS = 3000
BOUND_MB = 40  # measured here: under 10 MB of drift after the first epoch


def _rss_mb(process: psutil.Process) -> float:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def test_loader_memory_is_bounded_over_epochs(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    load_plugins()
    spec = load(["modality=video", "experiment=video_demo", "data.input_size=32",
                 "data.num_frames=4", "data.sampling_rate=2", "data.repeat=4",
                 "model.patch_size=8", "train.batch_size=16", "train.num_workers=3"])
    sources = _sources(spec)
    feeds = _feeds(spec, sources, build_tokenizer(spec.model, sources[0].sample_shape[0]), 1)
    per_epoch = len(sources[0].dataset) // feeds[0].items * feeds[0].items * 4  # clips
    stream = make_stream(feeds, spec.seed, 0, 1, spec.train.num_workers, False, timeout=120)(0)
    me = psutil.Process()
    seen, samples, next_epoch = 0, [], per_epoch
    while seen < CLIPS:
        batch = next(stream)
        assert batch.x.shape[0] == 16 and batch.items == 4  # K=4 views of 4 videos
        seen += batch.x.shape[0]
        if seen >= next_epoch:
            samples.append(_rss_mb(me))
            next_epoch += per_epoch
    del stream
    print(f"per-epoch RSS (MB): {[round(s, 1) for s in samples]}")
    assert len(samples) >= 4, (per_epoch, samples)
    growth = max(samples[1:]) - samples[1]
    assert growth < BOUND_MB, f"memory grew {growth:.1f} MB over epochs 2..: {samples}"
