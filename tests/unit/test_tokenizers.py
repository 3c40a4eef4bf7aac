"""Patch tokenizers: exact patchify/unpatchify inverse, MAE's target layout, timm weights."""
from __future__ import annotations

import math

import mim  # noqa: F401  (torchvision shim before timm)
import pytest
import timm.layers
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from mim.models.tokenizers import CubeTokenizer, Patch2dTokenizer, gather_tokens

small = st.integers(1, 4)


def mae_patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """MAE's reference (models_mae.py): nchpwq -> nhwpqc."""
    n, c, hp, wp = x.shape
    h, w = hp // p, wp // p
    x = x.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def cube_patchify(x: torch.Tensor, pt: int, p: int) -> torch.Tensor:
    """The 3D analogue: (t h w) tokens, (pt ph pw c) values, written with reshape/permute."""
    n, c, tt, hh, ww = x.shape
    t, h, w = tt // pt, hh // p, ww // p
    x = x.reshape(n, c, t, pt, h, p, w, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(n, t * h * w, pt * p * p * c)


def seeded_mask(batch: int, length: int, num_masked: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        mask[row, torch.randperm(length, generator=g)[:num_masked]] = True
    return mask


def visible_reference(mask: torch.Tensor) -> torch.Tensor:
    """Visible ids in grid order, computed without the library."""
    return torch.stack([(~row).nonzero().squeeze(1) for row in mask])


@given(p=small, gh=small, gw=small, c=st.integers(1, 3), b=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_patch2d_roundtrip_and_mae_layout(p, gh, gw, c, b, seed):
    tok = Patch2dTokenizer(in_chans=c, embed_dim=4, patch_size=p)
    x = torch.randn(b, c, gh * p, gw * p, generator=torch.Generator().manual_seed(seed))
    grid = tok.grid(x.shape[1:])
    assert grid == (gh, gw)
    y = tok.patchify(x)
    assert y.shape == (b, gh * gw, tok.patch_dim)
    assert torch.equal(tok.unpatchify(y, grid), x)
    assert torch.equal(y, mae_patchify(x, p))


@given(p=st.integers(1, 3), pt=st.integers(1, 3), gt=st.integers(1, 3), gh=st.integers(1, 3),
       gw=st.integers(1, 3), c=st.integers(1, 3), b=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_cube_roundtrip_and_layout(p, pt, gt, gh, gw, c, b, seed):
    tok = CubeTokenizer(in_chans=c, embed_dim=4, patch_size=p, tubelet_size=pt)
    assert tok.rank == 3 and tok.patch_size == (pt, p, p)
    x = torch.randn(b, c, gt * pt, gh * p, gw * p, generator=torch.Generator().manual_seed(seed))
    grid = tok.grid(x.shape[1:])
    assert grid == (gt, gh, gw)
    y = tok.patchify(x)
    assert y.shape == (b, gt * gh * gw, tok.patch_dim)
    assert torch.equal(tok.unpatchify(y, grid), x)
    assert torch.equal(y, cube_patchify(x, pt, p))


@given(p=small, c=st.integers(1, 3), pt=st.integers(1, 3))
def test_patch_dim(p, c, pt):
    assert Patch2dTokenizer(c, 8, patch_size=p).patch_dim == p * p * c
    cube = CubeTokenizer(c, 8, patch_size=p, tubelet_size=pt)
    assert cube.patch_dim == math.prod(cube.patch_size) * c == pt * p * p * c


@given(p=small, gh=small, gw=small, c=st.integers(1, 3), d=st.sampled_from([4, 8, 16]),
       seed=st.integers(0, 2**16))
def test_patch2d_forward_is_the_conv_and_timm_patch_embed(p, gh, gw, c, d, seed):
    torch.manual_seed(seed)
    tok = Patch2dTokenizer(in_chans=c, embed_dim=d, patch_size=p)
    x = torch.randn(2, c, gh * p, gw * p)
    out = tok(x, None)
    conv = F.conv2d(x, tok.proj.weight, tok.proj.bias, stride=p).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, conv, atol=1e-5, rtol=1e-5)

    timm_embed = timm.layers.PatchEmbed(img_size=(gh * p, gw * p), patch_size=p, in_chans=c,
                                        embed_dim=d)
    timm_embed.proj.load_state_dict(tok.proj.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(out, timm_embed(x), atol=1e-5, rtol=1e-5)


@given(p=st.integers(1, 3), pt=st.integers(1, 2), g=st.integers(1, 3), c=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_cube_forward_is_conv3d(p, pt, g, c, seed):
    torch.manual_seed(seed)
    tok = CubeTokenizer(in_chans=c, embed_dim=8, patch_size=p, tubelet_size=pt)
    x = torch.randn(2, c, g * pt, g * p, (g + 1) * p)
    conv = F.conv3d(x, tok.proj.weight, tok.proj.bias, stride=(pt, p, p))
    torch.testing.assert_close(tok(x, None), conv.flatten(2).transpose(1, 2), atol=1e-5,
                               rtol=1e-5)


@given(rank=st.sampled_from([2, 3]), g=st.integers(2, 4), b=st.integers(1, 3),
       frac=st.floats(0.1, 0.9), seed=st.integers(0, 2**16))
def test_masked_forward_returns_visible_tokens_in_grid_order(rank, g, b, frac, seed):
    torch.manual_seed(seed)
    tok = (Patch2dTokenizer(2, 8, patch_size=2) if rank == 2
           else CubeTokenizer(2, 8, patch_size=2, tubelet_size=1))
    spatial = (g * 2, g * 2) if rank == 2 else (g, g * 2, g * 2)
    x = torch.randn(b, 2, *spatial)
    length = tok.num_tokens(x.shape[1:])
    num_masked = min(length - 1, max(1, int(length * frac)))
    mask = seeded_mask(b, length, num_masked, seed)
    visible = tok(x, mask)
    assert visible.shape == (b, length - num_masked, 8)
    expected = gather_tokens(tok(x, None), visible_reference(mask))
    torch.testing.assert_close(visible, expected, atol=1e-6, rtol=1e-6)


def test_grid_rejects_bad_inputs():
    tok = Patch2dTokenizer(in_chans=3, embed_dim=8, patch_size=8)
    assert tok.grid((3, 32, 24)) == (4, 3)
    with pytest.raises(ValueError, match="divisible"):
        tok.grid((3, 30, 32))
    with pytest.raises(ValueError, match="C=3"):
        tok.grid((1, 32, 32))
    with pytest.raises(ValueError):
        tok.grid((3, 4, 32, 32))  # a 3D sample for a 2D tokenizer
    cube = CubeTokenizer(in_chans=1, embed_dim=8, patch_size=4, tubelet_size=2)
    assert cube.grid((1, 4, 8, 8)) == (2, 2, 2)
    with pytest.raises(ValueError, match="divisible"):
        cube.grid((1, 3, 8, 8))  # time not divisible by the tubelet
    with pytest.raises(ValueError):
        cube.grid((3, 4, 8, 8))


@pytest.mark.parametrize("name,overrides,shape", [
    ("mae_vit_base_patch16", {}, (3, 64, 96)),
    ("maest_vit_base_patch16_16x224", {}, (3, 8, 32, 48)),
    ("mcmae_base", {"tokenizer": {"dims": [8, 16], "depths": [1, 1]}}, (3, 64, 32)),
    ("mcmae_base", {"tokenizer": {"dims": [8, 16], "depths": [1, 1], "mask_level": "input"},
                    "loss_on": "all"}, (3, 64, 32)),
    ("mcmae3d_small_patch16", {"tokenizer": {"dims": [8, 16], "depths": [1, 1]}},
     (1, 32, 32, 64)),
])
def test_token_grids_equal_the_built_tokenizers_grids(name, overrides, shape):
    from mim.models.factory import build_tokenizer, model_config, token_grids

    cfg = model_config(name, embed_dim=32, num_heads=2, **overrides)
    built = build_tokenizer(cfg, in_chans=shape[0])
    grid, mask_grid = token_grids(cfg, shape)
    assert grid == built.grid(shape) and mask_grid == built.mask_grid(shape)
    assert (grid != mask_grid) == (cfg.tokenizer.get("mask_level") == "input")
    bad = (*shape[:-1], shape[-1] + 1)  # no longer a multiple of the patch size
    with pytest.raises(ValueError):
        token_grids(cfg, bad)
