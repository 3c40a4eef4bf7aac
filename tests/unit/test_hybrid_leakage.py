"""Masked convolution (MCMAE Sec. 2.2): masked pixels never reach a visible token, exactly.

The property: change the pixels of every masked stage-3 patch (upsampled to stages 1-2 by the
tokenizer) and every visible token's encoder output, its multi-scale skip features and the
decoder's predictions stay bitwise equal (torch.equal, fp32), in 2D and 3D, for any grid and
mask. The control shows the property is not trivial: with the zeroing inside the conv blocks
switched off (Table 5, "w/o masked conv"), the 5x5 depthwise convs carry the change into
visible tokens.
"""
from __future__ import annotations

import math

import mim
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mim.models.tokenizers.masked_conv as masked_conv
from mim.masking import RandomMask, TubeMask

# patch 8: stage strides 2, 2, 2, so a stage-1 cell is 2 px and the 5x5 kernel spans masks
TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16,
            decoder_depth=1, decoder_num_heads=2)


def _model(name: str, in_chans: int = 3, stages: dict | None = None,
           **overrides) -> mim.MaskedAutoencoder:
    """A tiny model of preset ``name``; ``stages``: more of the tokenizer's parameters."""
    torch.manual_seed(0)
    tokenizer = {"dims": [8, 16], **(stages or {})}
    return mim.create_model(name, in_chans, tokenizer=tokenizer, **{**TINY, **overrides}).eval()


def _masks(policy, grid: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([policy(grid, g) for _ in range(batch)])  # [B, L]


def _change_masked_pixels(model, x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """x with new values in every masked patch (the patch layout of patchify, not the helper
    under test)."""
    tokenizer = model.tokenizer
    patches = tokenizer.patchify(x)  # [B, L, P]
    noise = torch.randn(patches.shape, generator=torch.Generator().manual_seed(seed))
    changed = torch.where(mask[..., None], patches + 3 * noise, patches)
    return tokenizer.unpatchify(changed, tokenizer.grid(x.shape[1:]))


def _outputs(model, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        encoded = model.encode(x, mask)
        return [encoded.tokens, encoded.skip, model.decode(encoded)]


def _assert_no_leak(model, x: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
    changed = _change_masked_pixels(model, x, mask, seed)
    assert not torch.equal(changed, x)
    before, after = _outputs(model, x, mask), _outputs(model, changed, mask)
    for name, a, b in zip(("encoder tokens", "skip features", "predictions"), before, after):
        assert a.dtype == torch.float32
        assert torch.equal(a, b), name


@given(h=st.integers(2, 5), w=st.integers(2, 5), ratio=st.sampled_from([0.5, 0.75]),
       seed=st.integers(0, 2**16))
def test_masked_pixels_never_reach_visible_tokens_2d(h, w, ratio, seed):
    model = _model("mcmae_small")
    grid = (h, w)
    x = torch.randn(2, 3, h * 8, w * 8, generator=torch.Generator().manual_seed(seed))
    _assert_no_leak(model, x, _masks(RandomMask(ratio), grid, 2, seed), seed + 1)


@given(t=st.integers(1, 2), h=st.integers(2, 4), w=st.integers(2, 4),
       seed=st.integers(0, 2**16), tube=st.booleans())
def test_masked_pixels_never_reach_visible_tokens_3d(t, h, w, seed, tube):
    # cubes of 2 frames at stage 1, 3x5x5 masked depthwise convs over space-time
    model = _model("videomcmae_base_patch16_16x224", stages={"time_kernel": 3})
    grid = (t, h, w)
    policy = TubeMask(0.5) if tube else RandomMask(0.5)
    x = torch.randn(2, 3, t * 2, h * 8, w * 8, generator=torch.Generator().manual_seed(seed))
    _assert_no_leak(model, x, _masks(policy, grid, 2, seed), seed + 1)


def test_volume_preset_masks_every_axis():
    # isotropic strides 2, 2, 2 on a one-channel volume: masked 5x5x5 convs along depth too
    model = _model("mcmae3d_small_patch16", in_chans=1, tubelet_size=8,
                   stages={"time_strides": [2, 2, 2]})
    x = torch.randn(2, 1, 24, 16, 24, generator=torch.Generator().manual_seed(0))
    _assert_no_leak(model, x, _masks(RandomMask(0.5), (3, 2, 3), 2, 3), 4)


@pytest.mark.parametrize("name, shape, grid", [
    ("mcmae_small", (2, 3, 32, 40), (4, 5)),
    ("videomcmae_base_patch16_16x224", (2, 3, 4, 32, 32), (2, 4, 4)),
])
def test_without_masked_convolution_the_change_leaks(name, shape, grid, monkeypatch):
    model = _model(name)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mask = _masks(RandomMask(0.5), grid, 2, 0)
    changed = _change_masked_pixels(model, x, mask, 1)
    monkeypatch.setattr(masked_conv, "zero_masked", lambda y, m: y)  # Table 5: w/o masked conv
    before, after = _outputs(model, x, mask), _outputs(model, changed, mask)
    assert not torch.equal(before[0], after[0])
    assert math.prod(grid) - int(mask[0].sum()) == before[0].shape[1]  # still visible-only
