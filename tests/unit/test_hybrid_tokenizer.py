"""Hybrid (MCMAE) tokenizers: stage grids and mask upsampling on any grid, the tokenizer contract,
visible-only stage 3 with sin-cos positions, the multi-scale decoder switch, pyramid features and
config checks."""
from __future__ import annotations

import math

import mim
import pytest
import torch
import torch.nn.functional as F

from mim.config import ConfigError
from mim.config.compose import load
from omegaconf import OmegaConf
from mim.models.factory import ModelConfig, build_tokenizer, model_config
from mim.models.pos_embed import sincos_pos_embed
from mim.models.tokenizers import Patch2dTokenizer, Tokens
from mim.models.tokenizers.stage_masks import downsample_mask, stage_grids, upsample_mask

TINY = dict(embed_dim=32, depth=2, num_heads=2, tokenizer={"dims": [8, 16]},
            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _model(name: str = "mcmae_small", stages: dict | None = None,
           **overrides) -> mim.MaskedAutoencoder:
    """A tiny model of preset ``name``; ``stages``: more of the tokenizer's parameters."""
    torch.manual_seed(0)
    tokenizer = {**TINY["tokenizer"], **(stages or {})}
    return mim.create_model(name, **{**TINY, "tokenizer": tokenizer, **overrides})


def _mask(grid: tuple[int, ...], batch: int = 2, ratio: float = 0.75, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    length = math.prod(grid)
    keep = int(length * (1 - ratio))
    return torch.stack([torch.randperm(length, generator=g) >= keep for _ in range(batch)])


# (preset, sample shape (C, *spatial), expected stage grids 1, 2, 3): the paper's 224, non-square
# and non-224 images; video with cube embedding (time kept after stage 1); an isotropic volume
SIZES = [
    ("mcmae_small", (3, 224, 224), [(56, 56), (28, 28), (14, 14)]),
    ("mcmae_small", (3, 64, 96), [(16, 24), (8, 12), (4, 6)]),
    ("mcmae_small", (3, 160, 48), [(40, 12), (20, 6), (10, 3)]),
    ("mcmae_small", (3, 448, 320), [(112, 80), (56, 40), (28, 20)]),
    ("videomcmae_base_patch16_16x224", (3, 16, 224, 224),
     [(8, 56, 56), (8, 28, 28), (8, 14, 14)]),
    ("videomcmae_base_patch16_16x224", (3, 8, 96, 64), [(4, 24, 16), (4, 12, 8), (4, 6, 4)]),
    ("mcmae3d_small_patch16", (1, 64, 48, 80), [(16, 12, 20), (8, 6, 10), (4, 3, 5)]),
]


@pytest.mark.parametrize("name, shape, grids", SIZES)
def test_mask_upsampling_matches_the_stage_grids(name, shape, grids):
    tokenizer = build_tokenizer(model_config(name, **TINY), in_chans=shape[0])
    assert tokenizer.stage_grids(shape) == grids
    assert tokenizer.grid(shape) == grids[-1]
    assert tokenizer.patch_size == tuple(s // g for s, g in zip(shape[1:], grids[-1]))
    mask = _mask(grids[-1])  # drawn on the stage-3 grid
    stage1, stage2 = tokenizer.stage_masks(mask, shape)
    coarse = mask.reshape(2, 1, *grids[-1]).float()  # [B, 1, *g3]
    for stage_mask, grid in zip((stage1, stage2), grids[:2]):
        assert stage_mask.shape == (2, *grid)
        # nearest-neighbour resize by whole factors = each cell takes its stage-3 parent's flag
        reference = F.interpolate(coarse, size=grid, mode="nearest")[:, 0] > 0.5
        assert torch.equal(stage_mask, reference)
        assert stage_mask.float().mean() == mask.float().mean()  # same masked fraction
        assert torch.equal(downsample_mask(stage_mask, grid, grids[-1]),
                           mask.reshape(2, *grids[-1]))


def test_mask_helpers_reject_grids_that_do_not_nest():
    with pytest.raises(ValueError, match="not a whole multiple"):
        upsample_mask(torch.zeros(1, 6, dtype=torch.bool), (2, 3), (4, 4))
    with pytest.raises(ValueError, match="stage stride"):
        stage_grids((20, 16), ((4, 4), (2, 2), (2, 2)))


def test_tokenizer_contract_and_target_layout():
    tokenizer = _model().tokenizer
    x = torch.randn(2, 3, 48, 80)
    grid = tokenizer.grid(x.shape[1:])
    assert tokenizer.patch_size == (16, 16) and grid == (3, 5)
    assert tokenizer.patch_dim == 16 * 16 * 3
    y = tokenizer.patchify(x)
    # MAE's target layout: the same as a 16x16 patch tokenizer's
    assert torch.equal(y, Patch2dTokenizer(3, 8, patch_size=16).patchify(x))
    assert torch.equal(tokenizer.unpatchify(y, grid), x)
    mask = _mask(grid)
    out = tokenizer.tokenize(x, mask)
    assert isinstance(out, Tokens) and out.visible.shape == (2, 3, 32)
    assert torch.equal(tokenizer(x, mask), out.visible)
    assert torch.equal(out.ids_keep, torch.stack([(~m).nonzero().squeeze(1) for m in mask]))
    assert [s.shape for s in out.stages] == [(2, 8, 12, 20), (2, 16, 6, 10)]


def test_only_visible_stage3_tokens_enter_the_transformer_with_sincos_positions():
    model = _model().eval()
    assert model.cls_token is None  # MCMAE: no cls token (Sec. 2.2)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.randn(2, 3, 64, 64)
    mask = _mask((4, 4))  # 4 of 16 visible
    with torch.no_grad():
        out = model.tokenizer.tokenize(x, mask)
        model.encode(x, mask)
    pos = sincos_pos_embed(32, (4, 4))  # [L, D], added at the stage-3 input
    assert seen[0].shape == (2, 4, 32)
    torch.testing.assert_close(seen[0], out.visible + pos[out.ids_keep], rtol=0, atol=1e-6)


def test_multiscale_decoder_is_switchable():
    fused = _model()
    assert {"tokenizer.skip1.weight", "tokenizer.skip2.weight"} <= dict(
        fused.named_parameters()).keys()
    x, mask = torch.randn(2, 3, 64, 64), _mask((4, 4))
    encoded = fused.encode(x, mask)
    assert encoded.skip.shape == encoded.tokens.shape
    out = fused(x, mask)
    out.loss.backward()
    assert fused.tokenizer.skip1.weight.grad.abs().sum() > 0
    with torch.no_grad():  # the skip features change what the decoder sees (Eq. 1)
        plain = fused.decode(encoded)
        encoded.skip = torch.zeros_like(encoded.skip)
        assert not torch.allclose(fused.decode(encoded), plain)
    single = _model(stages={"multiscale": False})
    assert not any(k.startswith("tokenizer.skip") for k, _ in single.named_parameters())
    assert single.encode(x, mask).skip is None
    assert torch.isfinite(single(x, mask).loss)


def test_pyramid_features_at_strides_4_8_16_32():
    model = _model().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        levels = model.pyramid(x)
    assert [tuple(f.shape) for f in levels] == [(1, 8, 16, 24), (1, 16, 8, 12), (1, 32, 4, 6),
                                               (1, 32, 2, 3)]
    assert torch.equal(levels[3], F.max_pool2d(levels[2], 2))
    video = _model("videomcmae_base_patch16_16x224").eval()
    with torch.no_grad():  # time keeps the stage-1 tubelet stride; space goes to 1/32
        levels = video.pyramid(torch.randn(1, 3, 4, 64, 64))
    assert [tuple(f.shape[2:]) for f in levels] == [(2, 16, 16), (2, 8, 8), (2, 4, 4), (2, 2, 2)]
    vit = mim.create_model("mae_vit_base_patch16", embed_dim=32, depth=1, num_heads=2,
                           decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    with torch.no_grad():  # a plain ViT: its token grid and the pooled level
        assert [tuple(f.shape) for f in vit.pyramid(torch.randn(1, 3, 64, 64))] == [
            (1, 32, 4, 4), (1, 32, 2, 2)]


def test_input_random_masking_ablation_keeps_every_stage3_token():
    # Table 5: MAE's random mask on stage-1 tokens
    model = _model(loss_on="all", stages={"mask_level": "input"}).eval()
    x = torch.randn(2, 3, 64, 64)
    grid1 = model.tokenizer.mask_grid(x.shape[1:])
    assert grid1 == (16, 16)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with torch.no_grad():
        out = model(x, _mask(grid1))
    assert seen == [torch.Size([2, 16, 32])]  # all 4x4 stage-3 tokens
    assert out.pred.shape == (2, 16, 16 * 16 * 3) and torch.isfinite(out.loss)


def test_config_checks_name_the_key():
    cases = [(dict(patch_size=6), "model.patch_size"),
             (dict(dims=[64]), "model.tokenizer.dims"),
             (dict(depths=[2, -1]), "model.tokenizer.depths"),
             (dict(mlp_ratios=[4.0, 0.0]), "model.tokenizer.mlp_ratios"),
             (dict(kernel=4), "model.tokenizer.kernel"),
             (dict(time_kernel=0), "model.tokenizer.time_kernel"),
             (dict(tubelet_size=2, time_strides=[2, 2, 1]), "model.tokenizer.time_strides"),
             (dict(kernal=5), "model.tokenizer.kernal: unknown")]
    model_keys = ("patch_size", "tubelet_size")
    for fields, key in cases:
        params = {k: v for k, v in fields.items() if k not in model_keys}
        with pytest.raises(ValueError, match=key):
            ModelConfig(tokenizer={"name": "hybrid2d", **params},
                        **{k: v for k, v in fields.items() if k in model_keys})
    with pytest.raises(ConfigError) as err:  # from the command line: one line, before training
        load(["model=mcmae_small", "model.tokenizer.kernel=4"])
    assert "model.tokenizer.kernel" in str(err.value) and "\n" not in str(err.value)
    spec = load(["model=mcmae_small", "model.tokenizer.dims=[32,48]", "data.input_size=96"])
    assert spec.model.tokenizer["dims"] == [32, 48] and spec.model.tokenizer_name == "hybrid2d"


def test_a_tokenizer_comes_with_its_own_parameters_and_no_others():
    """A bare name stands for the tokenizer with its defaults; a tokenizer without parameters
    refuses one, naming the key; switching the tokenizer of a preset drops the old one's."""
    hybrid = ModelConfig(tokenizer="hybrid2d").tokenizer
    assert hybrid["name"] == "hybrid2d" and hybrid["kernel"] == 5 and hybrid["dims"] == [256, 384]
    with pytest.raises(ValueError, match="model.tokenizer.kernel: unknown; the patch2d"):
        ModelConfig(tokenizer={"name": "patch2d", "kernel": 5})
    assert model_config("mcmae_small", tokenizer="patch2d").tokenizer == {"name": "patch2d"}
    assert model_config("mcmae_small", tokenizer={"kernel": 7}).tokenizer["dims"] == [128, 256]
    spec = load(["model.tokenizer.name=hybrid2d", "+model.tokenizer.kernel=7"])
    assert spec.model.tokenizer["kernel"] == 7 and spec.model.tokenizer["depths"] == [2, 2]
    assert OmegaConf.to_container(spec.raw.model.tokenizer) == spec.model.tokenizer  # config.yaml


@pytest.mark.parametrize("tokenizer", ["hybrid2d", "hybrid3d"])
def test_bf16_gradients_of_the_conv_stages_match_fp32(tokenizer):
    """Under bf16 autocast the conv stages' weight gradients stay within bf16 rounding of the
    fp32 ones (torch's CPU bf16 depthwise conv3d got them wrong for channels-last input)."""
    from mim.models.factory import create_model
    from mim.masking import RandomMask

    video = tokenizer == "hybrid3d"
    name = "videomcmae_base_patch16_16x224" if video else "mcmae_small"
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = create_model(name, embed_dim=48, depth=1, num_heads=3,
                             tokenizer={"dims": [16, 32]},
                             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
        x = torch.randn(4, 3, *((8, 64, 64) if video else (64, 64)))
        grid = model.tokenizer.grid(x.shape[1:])
        mask = torch.stack([RandomMask(0.75)(grid, torch.Generator().manual_seed(i))
                            for i in range(4)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            model(x, mask).loss.backward()
        grads[dtype] = {n: p.grad for n, p in model.named_parameters()
                        if ".mix." in n and n.endswith("weight")}
    assert len(grads[torch.float32]) == 4  # two depthwise convs per stage, two stages
    for name, want in grads[torch.float32].items():
        got = grads[torch.bfloat16][name]
        assert torch.isfinite(got).all(), name
        assert float((got - want).norm() / want.norm()) < 0.05, name


def test_hidden_values_follow_the_level_the_mask_lives_on():
    """Reconstruction pictures black out what the encoder did not see: whole patches, or the
    stage-1 cells (4x4 pixels at patch 16) with ``model.tokenizer.mask_level=input``."""
    x_shape = (3, 32, 48)
    block = _model()
    grid = block.tokenizer.mask_grid(x_shape)  # (2, 3), stage 3
    mask = _mask(grid)
    assert torch.equal(block.tokenizer.hidden(mask, x_shape), mask.unsqueeze(-1))
    cells = _model(loss_on="all", stages={"mask_level": "input"}).tokenizer
    grid1 = cells.mask_grid(x_shape)
    assert grid1 == (8, 12)
    mask1 = _mask(grid1)  # [2, 96]
    hidden = cells.hidden(mask1, x_shape)  # [2, 6, 768]
    pixels = cells.unpatchify(hidden.float(), grid)  # [2, 3, 32, 48]
    expected = mask1.view(2, 1, 8, 1, 12, 1).expand(2, 3, 8, 4, 12, 4).reshape(2, 3, 32, 48)
    assert torch.equal(pixels.bool(), expected)


def test_hybrid_mask_level_config_errors_name_the_keys():
    for fields, key in [(dict(tokenizer={"name": "hybrid2d", "mask_level": "pixel"}),
                         "model.tokenizer.mask_level: 'pixel' is not one of: stage3, input"),
                        (dict(tokenizer={"name": "patch2d", "mask_level": "input"},
                              loss_on="all"),
                         "model.tokenizer.mask_level: unknown; the patch2d tokenizer"),
                        (dict(tokenizer={"name": "hybrid2d", "mask_level": "input"}),
                         "model.loss_on: with model.tokenizer.mask_level=input")]:
        with pytest.raises(ValueError, match=key):
            ModelConfig(**fields)
