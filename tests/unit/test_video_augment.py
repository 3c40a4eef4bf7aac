"""VideoMAE's fine-tuning view of a clip: one RandAugment draw for every frame, per-frame random
erasing, every draw from the clip's seed."""
from __future__ import annotations

import random

import mim  # noqa: F401  (torchvision shim before timm)
import numpy as np
import pytest
import torch

from mim.config import ConfigError
from mim.modalities.video.augment import FinetuneClipTransform
from mim.modalities.video.labelled import VideoEvalDataConfig, labelled
from mim.modalities.video.transforms import ClipTransform

# 6 frames of 70x90: a still picture, so any frame-to-frame change is the augmentation's
STILL = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 70, 90, 3), np.uint8), 6, 0)


def _config(**overrides) -> VideoEvalDataConfig:
    return VideoEvalDataConfig(**{"input_size": 48, **overrides})


def test_every_frame_gets_the_same_randaugment_draw() -> None:
    strong = FinetuneClipTransform(_config(reprob=0.0))
    plain = ClipTransform(_config())
    changed = 0
    for seed in range(12):
        x = strong(STILL, random.Random(seed))  # [3, T, S, S]
        assert x.shape == (3, 6, 48, 48)
        for t in range(1, 6):  # a still clip stays still
            assert torch.equal(x[:, t], x[:, 0]), (seed, t)
        changed += not torch.equal(x, plain(STILL, random.Random(seed)))
    assert changed >= 8  # 4 operations, each applied with probability 0.5


def test_a_view_is_a_function_of_its_seed_and_leaves_the_global_generators_alone() -> None:
    transform = FinetuneClipTransform(_config(reprob=0.5))
    random.seed(3)
    np.random.seed(3)
    before = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    views = [transform(STILL, random.Random(seed)) for seed in (5, 5, 6)]
    assert (random.random(), np.random.rand()) == before
    assert torch.equal(views[0], views[1])
    assert not torch.equal(views[0], views[2])


def test_without_randaugment_and_erasing_it_is_the_pretraining_view() -> None:
    cfg = _config(randaug="", reprob=0.0)
    for seed in range(4):
        assert torch.equal(FinetuneClipTransform(cfg)(STILL, random.Random(seed)),
                           ClipTransform(cfg)(STILL, random.Random(seed)))


def test_erasing_draws_a_rectangle_per_frame() -> None:
    cfg = _config(randaug="", reprob=1.0)
    plain = ClipTransform(cfg)(STILL, random.Random(0))
    x = FinetuneClipTransform(cfg)(STILL, random.Random(0))
    erased = x != plain  # [3, T, S, S]
    boxes = []
    for t in range(6):
        rows = erased[:, t].any(dim=(0, 2)).nonzero()[:, 0]
        cols = erased[:, t].any(dim=(0, 1)).nonzero()[:, 0]
        assert len(rows) and len(cols), t  # every frame erased at reprob 1
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert erased[:, t, top:bottom, left:right].all()  # one solid rectangle
        boxes.append((int(top), int(bottom), int(left), int(right)))
    assert len(set(boxes)) > 1  # each frame its own (VideoMAE)


def test_fine_tuning_gets_the_strong_view(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    data = labelled(_config(num_frames=4, sampling_rate=2, input_size=32))  # the motion demo
    assert isinstance(data.train_strong.sampler.transform, FinetuneClipTransform)
    assert type(data.train.sampler.transform) is ClipTransform  # the linear probe's view
    x, label = data.train_strong.load(0, seed=1)
    assert x.shape == (3, 4, 32, 32) and torch.isfinite(x).all()
    assert labelled(_config(num_frames=4, sampling_rate=2, input_size=32,
                            reader="pytorchvideo")).train_strong is None


@pytest.mark.parametrize("key, value, message", [
    ("randaug", "rand-m7-q4", "data.randaug: 'rand-m7-q4' is not a RandAugment spec"),
    ("reprob", -0.1, "data.reprob: must be in [0, 1], got -0.1"),
])
def test_bad_settings_name_the_key(key, value, message) -> None:
    with pytest.raises((ValueError, ConfigError), match=message.replace("[", r"\[")):
        _config(**{key: value})
