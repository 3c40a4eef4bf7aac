"""Hydra composition in-process: the paper's defaults, and one-line errors naming the key."""
from __future__ import annotations

import mim  # noqa: F401
import pytest

from mim.config import ConfigError
from mim.config.compose import load
from mim.masking import BlockMask, RandomMask


OWN = "data.root=/data/own"  # data of one's own: the modality's full recipe (no demo experiment)


@pytest.fixture(scope="module")
def default():
    return load([OWN])


def test_defaults_are_the_mae_recipe(default):
    model = default.model
    assert (model.name, model.embed_dim, model.depth, model.num_heads) == (
        "mae_vit_base_patch16", 768, 12, 12)
    assert (model.decoder_embed_dim, model.decoder_depth, model.decoder_num_heads) == (512, 8, 16)
    assert model.patch_size == 16 and model.norm_pix_loss is True
    assert isinstance(default.mask, RandomMask) and default.mask.ratio == 0.75
    assert default.data.input_size == 224
    assert default.data.min_scale == 0.2 and default.data.max_scale == 1.0
    assert default.optim.blr == 1.5e-4 and default.optim.lr is None
    assert list(default.optim.betas) == [0.9, 0.95]
    assert default.optim.weight_decay == 0.05
    assert default.optim.warmup_epochs == 40
    assert default.train.batch_size == 64 and default.train.epochs == 800
    assert default.modality.name == "image"
    assert default.backend.name == "torch" and default.launcher.name == "local"
    assert default.notes == ()


@pytest.mark.parametrize("modality,experiment", [("image", "demo"), ("video", "video_demo"),
                                                 ("volume", "volume_demo"),
                                                 ("omni", "omni_demo")])
def test_without_data_the_modality_trains_its_demo_experiment_and_says_so(modality, experiment):
    from mim.config.compose import compose

    spec = load([f"modality={modality}"])
    same = load([f"modality={modality}", f"experiment={experiment}"])
    assert spec.raw == same.raw and same.notes == ()  # as if the experiment were chosen
    [note] = spec.notes
    assert f"experiment={experiment}" in note and spec.model.name in note
    assert f"batch {spec.train.batch_size}" in note and "\n" not in note
    # the command line still wins over the experiment, and choosing none keeps the recipe
    assert load([f"modality={modality}", "train.batch_size=2"]).train.batch_size == 2
    full = compose([f"modality={modality}", "~experiment"])
    assert full.train.batch_size == 64 and full.train.max_steps is None


def test_data_of_ones_own_keeps_the_full_recipe():
    assert load(["modality=video", "data.list_file=/data/train.txt"]).notes == ()
    assert load(["modality=video", "data.root=/data/clips"]).model.name == (
        "videomae_vit_base_patch16_16x224")


def test_demo_experiment():
    spec = load(["experiment=demo"])
    assert spec.model.name == "mae_vit_tiny_patch16"
    assert spec.model.embed_dim == 192
    assert spec.data.input_size < 224 and spec.train.max_steps is not None


def test_overrides_are_typed():
    spec = load(["model=mae_vit_large_patch16", "model.depth=6", "mask=block", "mask.ratio=0.5",
                 "train.batch_size=8", "data.input_size=448"])
    assert (spec.model.embed_dim, spec.model.depth) == (1024, 6)
    assert spec.mask == BlockMask(0.5, [2, 2])
    assert spec.train.batch_size == 8 and spec.data.input_size == 448


def error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        load(overrides)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_unknown_key_lists_valid_keys():
    message = error(["train.bogus=1"])
    assert "train.bogus" in message and "batch_size" in message
    message = error(["model.bogus=1"])
    assert "model.bogus" in message and "embed_dim" in message


def test_unknown_group_option_lists_valid_options():
    message = error(["model=nope"])
    assert "nope" in message and "mae_vit_base_patch16" in message
    message = error(["modality=nope"])
    assert "nope" in message and "image" in message
    message = error(["mask=nope"])
    assert "random" in message and "block" in message


def test_bad_values_name_the_key():
    assert "train.batch_size" in error(["train.batch_size=abc"])
    assert "train.batch_size" in error(["train.batch_size=-1"])
    assert "mask.ratio" in error(["mask.ratio=1.5"])
    assert "mask.ratio" in error(["mask=block", "mask.ratio=0"])
    assert "model.num_heads" in error(["model.num_heads=5"])
    assert "optim.betas" in error(["optim.betas=[0.9]"])
    assert "train.precision" in error(["train.precision=fp8"])
    assert load(["train.precision=fp16"]).train.precision == "fp16"


def test_a_precision_the_backend_cannot_run_names_its_valid_values():
    message = error(["backend=xla", "train.precision=fp16"])
    assert message == ("train.precision: 'fp16' is not supported with backend=xla; valid there: "
                       "auto, fp32, bf16")


def test_grid_is_checked_at_load():
    """The token grid (input size / patch size) and the mask unit are checked before training."""
    message = error([OWN, "mask=block", "mask.unit=[3,3]"])  # 224 / 16 = 14: not by 3
    assert "mask.unit" in message and "14" in message
    spec = load(["mask=block", "mask.unit=[3,3]", "data.input_size=96"])  # 6 x 6: fine
    assert spec.mask.unit == [3, 3]
    assert "data.input_size" in error(["data.input_size=100"])  # not a multiple of 16
    assert "mask.ratio" in error(["mask.ratio=0.99", "data.input_size=32"])  # 4 tokens: none kept


def test_a_learned_table_without_its_grid_names_the_grid_to_set():
    assert error([OWN, "model.pos_embed=learned"]).startswith(
        "model.pos_grid: model.pos_embed=learned needs the grid of its table: set "
        "model.pos_grid=[14,14] (the token grid of an input [224, 224] with model.patch_size=16)")
    assert "model.pos_grid=[7,7]" in error(["model.pos_embed=learned", "data.input_size=112"])
    assert "model.pos_grid=[8,14,14]" in error(["modality=video", OWN, "model.pos_embed=learned"])
    assert "remove model.pos_grid or set model.pos_embed=learned" in \
        error(["model.pos_grid=[14,14]"])
    spec = load([OWN, "model.pos_embed=learned", "model.pos_grid=[14,14]"])
    assert spec.model.pos_grid == [14, 14]


def test_an_unset_model_init_leaves_the_run_directory_as_before(tmp_path):
    """model.init came after runs existed: unset, it must not move their default directory."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    from mim.config.compose import load
    from mim.rundir import config_hash

    spec = load(["modality=image"])
    tree = OmegaConf.to_container(spec.raw, resolve=True)
    for key in ("run", "launcher", "tracker"):
        tree.pop(key)
    assert tree["model"].pop("init") is None
    assert config_hash(spec) == hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:8]
    weights = tmp_path / "w.safetensors"
    assert config_hash(load(["modality=image", f"model.init={weights}"])) != config_hash(spec)
