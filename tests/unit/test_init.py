"""``model.init``: a model starts from weights of every readable format, exactly, and moves by at
most one optimiser step in one step; misfits are one line; image weights start a video model.

The weight files are the converters' fixtures (``test_convert.py``), built at random.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import mim
import pytest
import timm
import torch
from einops import rearrange

from mim.config.errors import ConfigError
from mim.convert import Converted, read_weights
from mim.engine.optim import build_adamw
from mim.models.factory import build_model, model_config
from mim.init import init_model
from mim.models.model import is_decoder
from tests.unit.test_convert import (DEC, DEC_HEADS, DIM, HEADS, PATCH, SIZE, ReferenceMAE,
                                     masks, perturb, tiny_mim, vitmae)

LR, WD = 1e-3, 0.05
TINY = dict(embed_dim=DIM, depth=2, num_heads=HEADS, patch_size=PATCH, decoder_embed_dim=DEC,
            decoder_depth=1, decoder_num_heads=DEC_HEADS)  # the converters' fixtures' sizes


def image_config(**overrides):
    return model_config("mae_vit_base_patch16", **{**TINY, **overrides})


def video_config(**overrides):
    return model_config("videomae_vit_small_patch16_16x224", **{**TINY, **overrides})


def mae_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    ref = ReferenceMAE()
    perturb(ref)
    path = tmp_path / "checkpoint-799.pth"
    args = argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True, input_size=SIZE)
    torch.save({"model": ref.state_dict(), "epoch": 799, "args": args}, path)
    return path


def timm_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=5)
    perturb(vit)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    return tmp_path / "vit.pth"


SOURCES = {  # format -> (the weights, the run's model config, has a decoder)
    "hf": (lambda tmp: vitmae(tmp, True)[1], {}, True),
    "mae": (mae_file, {}, True),
    "timm": (timm_file, {"pos_embed": "learned", "pos_grid": [4, 4]}, False),
}


@pytest.fixture
def mim_log(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("mim")
    logger.addHandler(caplog.handler)  # mim's logger may not propagate (train sets it so)
    caplog.set_level(logging.INFO, logger="mim")
    yield caplog
    logger.removeHandler(caplog.handler)


def started(cfg, in_chans: int = 3) -> tuple[torch.nn.Module, dict]:
    """A model of ``cfg`` initialised from ``cfg.init``, and the seeded initialisation it had."""
    torch.manual_seed(11)
    model = build_model(cfg, in_chans)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    init_model(model, cfg, resume_from=None)
    return model, fresh


@pytest.mark.parametrize("fmt", SOURCES)
def test_init_loads_exactly_and_one_step_moves_at_most_one_step(tmp_path, fmt, mim_log) -> None:
    build, overrides, has_decoder = SOURCES[fmt]
    path = build(tmp_path)
    cfg = image_config(init=str(path), **overrides)
    model, fresh = started(cfg)
    source = read_weights(path, num_heads=HEADS, decoder_num_heads=DEC_HEADS).state
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in state.items():  # before any step: the source's, bit for bit
        if is_decoder(key) and not has_decoder:
            assert torch.equal(value, fresh[key]), f"{key}: the decoder is not at its init"
        else:
            assert torch.equal(value, source[key]), key
    message = next(r.getMessage() for r in mim_log.records if "model.init" in r.getMessage())
    loaded = message.split(" loaded: ")[1].split(";")[0].split(", ")
    assert loaded == ["cls_token", "tokenizer", *(["learned_pos_embed"] if fmt == "timm" else []),
                      "blocks", "norm", *(["decoder"] if has_decoder else [])]
    assert ("decoder at its initialisation (the weights have none)" in message) != has_decoder

    optimizer = build_adamw(model, LR, (0.9, 0.95), WD, "cpu")
    model.train()
    model(torch.randn(4, 3, SIZE, SIZE), masks(4, (SIZE // PATCH) ** 2, 12)).loss.backward()
    optimizer.step()
    moved = 0.0
    for key, value in model.state_dict().items():  # AdamW's first step: |dw| <= lr (1 + wd |w|)
        delta = (value - state[key]).abs()
        assert (delta <= LR * (1 + WD * state[key].abs()) * 1.001 + 1e-7).all(), key
        moved = max(moved, delta.max().item())
    assert moved > LR / 2  # the step did move the weights


def test_a_misfit_is_one_line_naming_keys_and_shapes(tmp_path) -> None:
    path = mae_file(tmp_path)
    with pytest.raises(ConfigError) as info:
        started(image_config(init=str(path), embed_dim=2 * DIM))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"model.init: {path} (mae) does not fit")
    assert f"blocks.0.attn.qkv.weight [{3 * DIM}, {DIM}] vs the model's [{6 * DIM}, {2 * DIM}]" \
        in text
    assert "and " in text and "more" in text  # the rest counted, not listed
    with pytest.raises(ConfigError, match=r"model.pos_embed=learned model.pos_grid=\[4,4\]"):
        started(image_config(init=str(timm_file(tmp_path))))
    video = tmp_path / "video"  # video weights do not start an image model
    mim.convert.WRITERS["mim"](Converted(video_config(), 3, build_model(video_config(), 3)
                                         .state_dict(), "mim", (4, SIZE, SIZE)), video)
    with pytest.raises(ConfigError, match=r"tokenizer.proj.weight \[48, 3, 2, 8, 8\] vs the "
                                          r"model's \[48, 3, 8, 8\]"):
        started(image_config(init=str(video), pos_embed="learned", pos_grid=[4, 4]))
    with pytest.raises(ConfigError, match="model.init: .*no such file"):
        started(image_config(init=str(tmp_path / "absent.pth")))


def test_resume_wins_over_init(tmp_path, mim_log) -> None:
    cfg = image_config(init=str(mae_file(tmp_path)))
    torch.manual_seed(11)
    model = build_model(cfg, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_model(model, cfg, resume_from=tmp_path / "step_00000001")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "the run resumes from its checkpoint" in mim_log.text


def test_image_weights_start_a_video_model(tmp_path, mim_log) -> None:
    image = tiny_mim(cls_token=False)  # VideoMAE has no cls token: its attention is the image's
    folder = tmp_path / "image"
    mim.convert.WRITERS["mim"](Converted(image_config(cls_token=False), 3, image.state_dict(),
                                         "mim", (SIZE, SIZE)), folder)
    frame = torch.randn(2, 3, SIZE, SIZE)
    clip = frame.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # [B, C, T=4, H, W]: one frame repeated
    # the positions as weights: the image's spatial table shared across the 2 time steps
    video, _ = started(video_config(init=str(folder), pos_embed="learned",
                                    pos_grid=[2, 4, 4]))
    assert "decoder at its initialisation (the patch geometry changed)" in mim_log.text
    with torch.no_grad():
        ours = rearrange(video.eval().encode(clip).tokens, "b (t l) d -> t b l d", t=2)
        theirs = image.encode(frame).tokens  # [B, L, D]
        for features in ours:
            torch.testing.assert_close(features, theirs, atol=2e-5, rtol=0)
    # the default video model (VideoMAE's fixed flat table): the same patch embedding per step
    video, _ = started(video_config(init=str(folder)))
    assert "positions: the model's own flat table" in mim_log.text
    with torch.no_grad():
        ours = rearrange(video.tokenizer(clip, None), "b (t l) d -> t b l d", t=2)
        for tokens in ours:
            torch.testing.assert_close(tokens, image.tokenizer(frame, None), atol=2e-5, rtol=0)


def test_another_patch_size_and_grid_go_through_the_transfer_code(tmp_path, mim_log) -> None:
    from mim.models.transfer import resize_patch_kernel
    from mim.models.pos_embed import interpolate_pos_embed

    path = timm_file(tmp_path)  # 8x8 patches, a learned table on the 4x4 grid
    source = read_weights(path, num_heads=HEADS).state
    model, fresh = started(image_config(init=str(path), patch_size=4, pos_embed="learned",
                                   pos_grid=[8, 8]))
    state = model.state_dict()
    assert torch.equal(state["tokenizer.proj.weight"],
                       resize_patch_kernel(source["tokenizer.proj.weight"], (4, 4)))
    assert torch.equal(state["learned_pos_embed.table"],
                       interpolate_pos_embed(source["learned_pos_embed.table"], (4, 4), (8, 8)))
    assert torch.equal(state["blocks.1.mlp.fc2.weight"], source["blocks.1.mlp.fc2.weight"])
    assert all(torch.equal(state[k], fresh[k]) for k in state if is_decoder(k))
    assert "transfer: patch kernel (8, 8) -> (4, 4)" in mim_log.text


def mae_encoder_file(tmp_path: Path) -> Path:
    """MAE's encoder-only release (``mae_pretrain_vit_base.pth``): {"model": the encoder}."""
    torch.manual_seed(0)
    ref = ReferenceMAE()
    perturb(ref)
    encoder = {k: v for k, v in ref.state_dict().items()
               if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit.pth")
    return tmp_path / "mae_pretrain_vit.pth"


OWN_DECODER = dict(decoder_embed_dim=DIM, decoder_num_heads=HEADS)  # 3 heads: 32 wide takes none
UNUSED_DECODERS = {  # source, the run's model: the source's decoder is absent or left out
    "hf folder -> video": (lambda tmp: vitmae(tmp, True)[1], lambda: video_config(**OWN_DECODER)),
    "mae with decoder -> video": (mae_file, lambda: video_config(**OWN_DECODER)),
    "mae encoder only -> image": (mae_encoder_file, lambda: image_config(**OWN_DECODER)),
    "timm -> image": (timm_file, lambda: image_config(**OWN_DECODER, pos_embed="learned",
                                                      pos_grid=[4, 4])),
}


@pytest.mark.parametrize("case", UNUSED_DECODERS)
def test_a_decoder_not_loaded_imposes_no_heads_the_run_keeps_its_own(tmp_path, case,
                                                                       mim_log) -> None:
    """The README's ``modality=video model.init=<ViTMAE>`` and a decoder-less file under a run
    whose decoder heads do not divide the weights' decoder width (or the placeholder's)."""
    build, config = UNUSED_DECODERS[case]
    path = build(tmp_path)
    model, fresh = started(replace(config(), init=str(path)))
    source = read_weights(path, num_heads=HEADS, decoder_num_heads=DEC_HEADS).state
    state = model.state_dict()
    for key in state:
        if is_decoder(key):
            assert torch.equal(state[key], fresh[key]), f"{key}: not the run's own decoder"
        elif key.startswith("blocks."):
            assert torch.equal(state[key], source[key]), key
    assert model.decoder_blocks[0].attn.num_heads == HEADS  # the run's decoder stands
    assert "decoder at its initialisation" in mim_log.text


def test_a_decoder_loaded_runs_with_the_runs_heads(tmp_path) -> None:
    path = mae_file(tmp_path)  # a 32-wide decoder trained with 2 heads
    model, _ = started(image_config(init=str(path), decoder_num_heads=4))
    source = read_weights(path, num_heads=HEADS, decoder_num_heads=DEC_HEADS).state
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    assert model.decoder_blocks[0].attn.num_heads == 4


def test_heads_the_weights_width_does_not_take_are_a_misfit_not_a_head_error(tmp_path) -> None:
    path = mae_file(tmp_path)
    with pytest.raises(ConfigError) as info:  # 5 heads: the run's 60 wide, not the weights' 48
        started(image_config(init=str(path), embed_dim=60, num_heads=5))
    text = str(info.value)
    assert text.startswith(f"model.init: {path} (mae) does not fit"), text
    assert "tokenizer.proj.weight [48, 3, 8, 8] vs the model's [60, 3, 8, 8]" in text


def test_a_part_loaded_runs_with_the_heads_its_weights_record(tmp_path) -> None:
    """A Hugging Face folder records the heads of its encoder and decoder: a loaded part runs
    with them, so a run with other counts is told which setting to follow."""
    path = vitmae(tmp_path, True)[1]  # HEADS encoder heads, DEC_HEADS decoder heads
    with pytest.raises(ConfigError) as info:
        started(image_config(init=str(path), decoder_num_heads=DEC_HEADS * 2))
    text = str(info.value)
    assert f"its decoder was trained with {DEC_HEADS} heads (hf-vit-mae records it): set " \
           f"model.decoder_num_heads={DEC_HEADS} (the run has {DEC_HEADS * 2})" in text, text
    assert "its encoder" not in text
    model, _ = started(image_config(init=str(path)))  # the recorded counts: loaded
    assert model.decoder_blocks[0].attn.num_heads == DEC_HEADS
