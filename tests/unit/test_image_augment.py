"""MAE's fine-tuning view of an image: RandAugment and random erasing, seeded per sample."""
from __future__ import annotations

import random

import mim  # noqa: F401  (torchvision shim before timm)
import numpy as np
import pytest
import torch
from PIL import Image

from mim.config import ConfigError
from mim.modalities.image.augment import FinetuneTransform, erase, randaugment
from mim.modalities.image.labelled import ImageEvalDataConfig, labelled
from mim.modalities.image.transforms import PretrainTransform

PICTURE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), np.uint8))


def test_a_view_is_a_function_of_its_seed_and_leaves_the_global_generators_alone() -> None:
    transform = FinetuneTransform(ImageEvalDataConfig(input_size=64, reprob=0.5))
    random.seed(7)
    np.random.seed(7)
    before = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    views = [transform(PICTURE, seed) for seed in (1, 1, 2)]
    assert (random.random(), np.random.rand()) == before  # seeded inside, restored after
    assert torch.equal(views[0], views[1])
    assert not torch.equal(views[0], views[2])
    assert views[0].shape == (3, 64, 64)


def test_without_randaugment_and_erasing_it_is_the_training_crop() -> None:
    cfg = ImageEvalDataConfig(input_size=48, randaug="", reprob=0.0)
    for seed in range(4):
        plain = PretrainTransform(cfg)(PICTURE, seed)
        assert torch.equal(FinetuneTransform(cfg)(PICTURE, seed), plain)


def test_randaugment_changes_the_picture() -> None:
    plain = PretrainTransform(ImageEvalDataConfig(input_size=48))
    strong = FinetuneTransform(ImageEvalDataConfig(input_size=48, reprob=0.0))
    changed = [not torch.equal(strong(PICTURE, s), plain(PICTURE, s)) for s in range(20)]
    # two operations, each applied with probability 0.5 (timm): about 3 in 4 views change
    assert 10 <= sum(changed) < 20, changed


def test_erasing_fills_one_rectangle_with_noise() -> None:
    x = torch.zeros(3, 40, 50)
    for seed in range(20):
        erased = erase(x.clone(), random.Random(seed)) != 0  # [3, H, W]
        rows, cols = erased.any(dim=(0, 2)).nonzero(), erased.any(dim=(0, 1)).nonzero()
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        area = (bottom - top) * (right - left) / (40 * 50)
        assert erased[:, top:bottom, left:right].all()  # one solid rectangle, all channels
        assert erased.sum() == 3 * (bottom - top) * (right - left)
        assert 0.015 < area < 0.36


def test_fine_tuning_gets_the_strong_view_and_the_others_do_not(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    data = labelled(ImageEvalDataConfig(input_size=32))  # the LFW demo set
    assert isinstance(data.train_strong.transform, FinetuneTransform)
    assert type(data.train.transform) is PretrainTransform  # the linear probe's view


@pytest.mark.parametrize("key, value, message", [
    ("randaug", "rand-m9-zz3", "data.randaug: 'rand-m9-zz3' is not a RandAugment spec"),
    ("randaug", "auto", "data.randaug: 'auto' is not a RandAugment spec"),
    ("reprob", 1.5, "data.reprob: must be in [0, 1], got 1.5"),
])
def test_bad_settings_name_the_key(key, value, message) -> None:
    with pytest.raises((ValueError, ConfigError), match=message.replace("[", r"\[")):
        ImageEvalDataConfig(**{key: value})


@pytest.mark.parametrize("spec", ["rand-m10-mstd0-inc1", "rand-m0-mstd0", "rand-m9-mstd0.5-inc1"])
def test_every_randaugment_operation_runs_at_the_extreme_magnitudes(spec) -> None:
    """At magnitude 10 timm's PosterizeIncreasing (at 0, Posterize) keeps 0 bits, which Pillow
    refuses: a black picture instead, not a sample lost as unreadable."""
    transform = randaugment(spec, 32, [0.5, 0.5, 0.5])
    picture = PICTURE.resize((32, 32))
    for op in transform.ops:
        op.prob = 1.0
        out = op(picture)
        assert out.size == picture.size and out.mode == picture.mode
        if op.name.startswith("Posterize") and spec != "rand-m9-mstd0.5-inc1":
            assert not np.asarray(out).any()  # no bit kept
