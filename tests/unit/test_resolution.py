"""Progressive resolution: the size of each step, its batches in the loader, its config errors."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from mim.config.compose import load
from mim.config.errors import ConfigError
from mim.data import MaskingCollate
from mim.models.factory import ModelConfig, build_model
from mim.masking import RandomMask
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset
from mim.data.resolution import Stages, check, plan
from mim.data.stream import Feed, Source, make_stream

MODEL = ModelConfig(patch_size=8, embed_dim=48, depth=1, num_heads=3, decoder_embed_dim=32,
                    decoder_depth=1, decoder_num_heads=2)
SMALL = ["modality=image", "data.input_size=32", "model.patch_size=8"]


def test_the_size_is_a_function_of_the_step_in_equal_stages():
    stages = plan([(3, 16, 16), (3, 24, 24), (3, 32, 32)], total_steps=10, items_per_step=4)
    assert stages.starts == (0, 3, 6)
    sizes = [stages.at_step(step)[-1] for step in range(10)]
    assert sizes == [16] * 3 + [24] * 3 + [32] * 4
    # positions of one optimiser step share its size
    assert {stages(p)[-1] for p in range(12, 16)} == {24}
    assert stages(11)[-1] == 16 and stages(24)[-1] == 32


def test_a_repeated_size_lengthens_its_stage_and_no_schedule_is_none():
    stages = plan([(3, 16, 16)] * 3 + [(3, 32, 32)], total_steps=8, items_per_step=1)
    assert stages == Stages(((3, 16, 16), (3, 32, 32)), (0, 6), 1)
    assert plan([], 8, 1) is None


def test_the_loader_gives_each_step_its_size_and_resumes_at_any_position():
    data = ImageDataConfig(input_size=32, demo="lfw")
    dataset = build_dataset(data)
    shapes = [(3, 16, 16), (3, 32, 32)]
    policy = RandomMask(ratio=0.75)
    grids = check(MODEL, policy, shapes, (3, 32, 32))
    feed = Feed(Source("image", dataset, (3, 32, 32)), MaskingCollate(policy, (4, 4), grids),
                items=4, shape_at=plan(shapes, total_steps=4, items_per_step=4))
    batches = make_stream([feed], seed=0, rank=0, world_size=1, workers=0, pin_memory=False)
    run = list(itertools.islice(batches(0), 4))
    assert [tuple(b.x.shape) for b in run] == [(4, 3, 16, 16)] * 2 + [(4, 3, 32, 32)] * 2
    assert [tuple(b.mask.shape) for b in run] == [(4, 4)] * 2 + [(4, 16)] * 2
    assert [int(b.mask[0].sum()) for b in run] == [3, 3, 12, 12]
    resumed = list(itertools.islice(batches(1, [4]), 3))  # from step 1, across the change
    for a, b in zip(run[1:], resumed):
        assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask)


def test_a_size_off_the_patch_grid_is_one_line_naming_the_key_and_the_valid_sizes():
    with pytest.raises(ConfigError) as err:
        load([*SMALL, "data.resolution_schedule=[20,32]"])
    assert str(err.value) == ("data.resolution_schedule: 20 does not fit model.patch_size=8; "
                              "valid: 8, 16, 24, 32")


def test_a_schedule_must_end_at_the_full_size():
    with pytest.raises(ConfigError, match=r"^data.resolution_schedule: sizes >= 1 ending at "
                                          r"data.input_size=32 .*got \[16, 24\]$"):
        load([*SMALL, "data.resolution_schedule=[16,24]"])


@pytest.mark.parametrize("schedule", ["[[16,16],32]", "[16.5,32]", "['a',32]"])
def test_a_size_that_is_not_one_integer_is_one_line_naming_the_key(schedule):
    with pytest.raises(ConfigError) as err:
        load([*SMALL, f"data.resolution_schedule={schedule}"])
    assert str(err.value).startswith("data.resolution_schedule") and "\n" not in str(err.value)
    assert "not supported between" not in str(err.value)


def test_a_stage_left_without_steps_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="mim"):
        stages = plan([(3, 16, 16), (3, 24, 24), (3, 32, 32)], total_steps=2, items_per_step=1)
    assert stages.starts == (0, 0, 1)  # 16 px: no step
    assert "a 2-step run leaves no step to the stage at 16 px; give train.max_steps at least 3" \
        in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mim"):
        plan([(3, 16, 16), (3, 32, 32)], total_steps=2, items_per_step=1)
    assert caplog.text == ""


@pytest.mark.parametrize("modality", ["video", "omni"])
def test_other_modalities_refuse_a_schedule_in_one_line(modality):
    key = "data.image.resolution_schedule" if modality == "omni" else "data.resolution_schedule"
    with pytest.raises(ConfigError) as err:
        load([f"modality={modality}", f"{key}=[112,224]"])
    assert "\n" not in str(err.value) and str(err.value).startswith(key)


def test_a_learned_table_is_accepted_and_learns_through_its_resized_copy():
    # the table lives on the full grid; a smaller stage sees it resized (bicubic), and its
    # gradient reaches the table through the resize
    load([*SMALL, "data.resolution_schedule=[16,32]", "model.pos_embed=learned",
          "model.pos_grid=[4,4]"])
    model = build_model(dataclasses.replace(MODEL, pos_embed="learned", pos_grid=[4, 4]), 3)
    x = torch.randn(2, 3, 16, 16)
    mask = torch.stack([RandomMask(ratio=0.75)((2, 2), torch.Generator().manual_seed(k))
                        for k in range(2)])  # [B, L] on the 2 x 2 grid of 16 px
    model(x, mask).loss.backward()
    assert model.learned_pos_embed.table.grad.abs().sum() > 0


def test_cfg_shows_the_stages_with_their_first_step():
    from mim.preview import derived

    spec = load([*SMALL, "data.resolution_schedule=[16,16,24,32]", "train.max_steps=10",
                 "train.batch_size=4"])
    assert derived(spec)["resolution_schedule"] == [
        {"from_step": 0, "input": [16, 16], "grid": [2, 2], "masked_tokens": 3},
        {"from_step": 5, "input": [24, 24], "grid": [3, 3], "masked_tokens": 7},
        {"from_step": 7, "input": [32, 32], "grid": [4, 4], "masked_tokens": 12}]


def test_folders_and_shards_load_the_same_item_at_a_scheduled_size(tmp_path):
    from mim.data.pack import pack
    from tests.unit.test_shards import make_folder

    src = make_folder(tmp_path / "src", count=4)
    pack(str(src), str(tmp_path / "out"), shard_size=2, labels="folders")
    loaded = []
    for cfg in (ImageDataConfig(root=str(src), input_size=32, labels="folders"),
                ImageDataConfig(root=str(tmp_path / "out"), input_size=32, format="wds")):
        data = build_dataset(cfg)
        small = data.at_shape((3, 16, 16))
        loaded.append([small[(i, 7)].x for i in range(len(data))])  # packed in folder order
        assert data[(0, 7)].x.shape == (3, 32, 32)  # the dataset itself keeps its size
    assert all(x.shape == (3, 16, 16) for x in loaded[0]) and len(loaded[0]) == 4
    for a, b in zip(*loaded):
        assert torch.equal(a, b)
