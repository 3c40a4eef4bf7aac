"""Band-aware tokenizers (group2d, channel2d, spectral2d), shared positions over a leading band
axis, and the band masks (mask.groups=consistent, mask.band_dropout)."""
from __future__ import annotations

import math

import mim
import pytest
import torch
import torch.nn.functional as F

from mim.masking import RandomMask, build_mask
from mim.models.factory import model_config, token_grids
from mim.models.pos_embed import sincos_pos_embed
from mim.models.tokenizers import bands as bands_module
from mim.models.tokenizers.bands import (Channel2dTokenizer, Group2dTokenizer,
                                         Spectral2dTokenizer)
from mim.models.tokenizers.base import gather_tokens
from mim.models.tokenizers.patch import Patch2dTokenizer

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)
P, SIDE, B = 8, 32, 2  # patch, input side, batch: a 4x4 spatial grid
CELLS = (SIDE // P) ** 2
GROUPS = [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]  # SatMAE-like, unequal: 4, 4 and 2 bands
S2 = [0.443, 0.490, 0.560, 0.665, 0.705, 0.740, 0.783, 0.842, 0.865, 0.945, 1.375, 1.610, 2.190]
TOKENIZER = {"group2d": {"name": "group2d", "groups": GROUPS},
             "channel2d": {"name": "channel2d"},
             "spectral2d": {"name": "spectral2d", "wavelengths": S2, "generator_dim": 32}}
BANDS = {"group2d": 10, "channel2d": 13, "spectral2d": 13}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rasters(bands: int, seed: int = 0, batch: int = B) -> torch.Tensor:
    return torch.randn(batch, bands, SIDE, SIDE, generator=gen(seed))


def seeded_mask(batch: int, length: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        mask[row, torch.randperm(length, generator=g)[:num_masked]] = True
    return mask


def visible_reference(mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([(~row).nonzero().squeeze(1) for row in mask])


def mae_patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """MAE's reference (models_mae.py): nchpwq -> nhwpqc."""
    n, c, hp, wp = x.shape
    x = x.reshape(n, c, hp // p, p, wp // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (hp // p) * (wp // p), p * p * c)


def conv_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A kernel == stride conv -> tokens [B, h*w, D]."""
    return F.conv2d(x, weight, bias, stride=weight.shape[-1]).flatten(2).transpose(1, 2)


def tokenizer(name: str, **params):
    cls = {"group2d": Group2dTokenizer, "channel2d": Channel2dTokenizer,
           "spectral2d": Spectral2dTokenizer}[name]
    config = {k: v for k, v in TOKENIZER[name].items() if k != "name"}
    torch.manual_seed(0)
    return cls(in_chans=BANDS[name], embed_dim=16, patch_size=P, **{**config, **params})


def tiny(name: str, **overrides) -> mim.MaskedAutoencoder:
    torch.manual_seed(0)
    return mim.create_model("mae_vit_tiny_patch16", in_chans=BANDS[name],
                            tokenizer=TOKENIZER[name], **{**TINY, **overrides})


def one_line_error(call, key: str) -> str:
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert key in message and "\n" not in message, message
    return message


# -- group2d ------------------------------------------------------------------------------------
def test_group2d_grid_shapes_and_roundtrip():
    tok = tokenizer("group2d")
    x = rasters(10)
    assert tok.leading_axes == 1 and tok.pads_targets and tok.rank == 2
    grid = tok.grid(x.shape[1:])
    assert grid == (3, 4, 4) and tok.num_tokens(x.shape[1:]) == 48
    assert tok.patch_dim == P * P * 4
    y = tok.patchify(x)
    assert y.shape == (B, 48, P * P * 4)
    assert torch.equal(tok.unpatchify(y, grid), x)
    # each token holds its own group's bands in MAE's layout, then zeros
    for g, bands in enumerate(GROUPS):
        own = mae_patchify(x[:, bands], P)  # [B, 16, p*p*n_g]
        plane = y[:, g * CELLS:(g + 1) * CELLS]
        assert torch.equal(plane[..., :own.shape[-1]], own)
        assert torch.equal(plane[..., own.shape[-1]:], torch.zeros_like(plane[..., own.shape[-1]:]))
    with pytest.raises(ValueError, match="C=10"):
        tok.grid((9, SIDE, SIDE))


def test_group2d_padding_is_never_scored():
    tok = tokenizer("group2d")
    x = rasters(10)
    weight = tok.patchify(torch.ones_like(x))  # [B, L, P]: 1 on real values, 0 on padding
    assert set(weight.unique().tolist()) == {0.0, 1.0}
    assert int((weight == 0).sum()) == B * CELLS * P * P * 2  # group 2 lacks two bands
    target = tok.patchify(x)
    pred = torch.randn(target.shape, generator=gen(1))

    def loss(p):
        return ((p - target) ** 2 * weight).sum() / weight.sum()

    moved = torch.where(weight == 0, pred + 100.0, pred)  # only the padding changes
    assert torch.equal(loss(moved), loss(pred))
    assert not torch.equal(loss(torch.where(weight == 1, pred + 1.0, pred)), loss(pred))


def test_group2d_forward_is_each_groups_conv_plus_its_embedding():
    tok = tokenizer("group2d")
    x = rasters(10)
    out = tok(x, None)
    for g, bands in enumerate(GROUPS):
        proj = tok.projs[g]
        expected = conv_tokens(x[:, bands], proj.weight, proj.bias) + tok.group_embed[g]
        torch.testing.assert_close(out[:, g * CELLS:(g + 1) * CELLS], expected, atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize("name", ["group2d", "channel2d", "spectral2d"])
def test_masked_tokens_cost_nothing(name, monkeypatch):
    tok = tokenizer(name)
    x = rasters(BANDS[name])
    length = tok.num_tokens(x.shape[1:])
    mask = seeded_mask(B, length, length * 3 // 4, seed=3)
    rows = []
    linear = F.linear

    def counting(inputs, weight, bias=None):
        # a patch embedding: bands x p x p values in, the tokenizer's width out (the
        # kernel generator's linears have other sizes)
        if inputs.shape[-1] % (P * P) == 0 and weight.shape[0] == tok.embed_dim:
            rows.append(inputs.numel() // inputs.shape[-1])
        return linear(inputs, weight, bias)

    with torch.no_grad():
        full = tok(x, None)
        monkeypatch.setattr(bands_module.F, "linear", counting)
        visible = tok.tokenize(x, mask).visible
        monkeypatch.setattr(bands_module.F, "linear", linear)
    visible_count = length - length * 3 // 4
    assert sum(rows) == B * visible_count  # the patch embeddings saw the visible patches only
    assert visible.shape == (B, visible_count, tok.embed_dim)
    torch.testing.assert_close(visible, gather_tokens(full, visible_reference(mask)),
                               atol=1e-5, rtol=1e-5)
    # masked pixels do not reach the visible tokens
    patches = tok.patchify(x)
    noise = 5 * torch.randn(patches.shape, generator=gen(4))
    changed = tok.unpatchify(torch.where(mask[..., None], patches + noise, patches),
                             tok.grid(x.shape[1:]))
    assert not torch.equal(changed, x)
    with torch.no_grad():
        torch.testing.assert_close(tok(changed, mask), visible, atol=1e-6, rtol=1e-6)


def test_group2d_config_errors_name_the_key():
    key = "model.tokenizer.groups"
    assert "set model.tokenizer.groups" in one_line_error(
        lambda: model_config("mae_vit_tiny_patch16", tokenizer={"name": "group2d"}), key)
    for groups, words in (([[0, 1], [1, 2]], "band 1"), ([[0, 1], []], "empty"),
                          ([[0, -1]], "band -1")):
        assert words in one_line_error(lambda: model_config(
            "mae_vit_tiny_patch16", tokenizer={"name": "group2d", "groups": groups}), key)
    cfg = model_config("mae_vit_tiny_patch16", patch_size=P,
                       tokenizer={"name": "group2d", "groups": [[0, 1], [2, 3]]})
    assert "band 3" in one_line_error(lambda: token_grids(cfg, (3, SIDE, SIDE)), key)
    message = one_line_error(lambda: token_grids(cfg, (6, SIDE, SIDE)), key)
    assert "band 4 is in no group" in message  # would be silently ignored: refused
    assert token_grids(cfg, (4, SIDE, SIDE))[0] == (2, 4, 4)  # built on the meta device


# -- channel2d ----------------------------------------------------------------------------------
def test_channel2d_grid_roundtrip_and_forward():
    tok = tokenizer("channel2d")
    x = rasters(13)
    assert tok.leading_axes == 1 and not tok.pads_targets
    grid = tok.grid(x.shape[1:])
    assert grid == (13, 4, 4) and tok.patch_dim == P * P
    y = tok.patchify(x)
    assert y.shape == (B, 13 * CELLS, P * P)
    assert torch.equal(tok.unpatchify(y, grid), x)
    out = tok(x, None)
    for band in (0, 7, 12):
        assert torch.equal(y[:, band * CELLS:(band + 1) * CELLS], mae_patchify(x[:, [band]], P))
        expected = conv_tokens(x[:, [band]], tok.proj.weight, tok.proj.bias) + tok.band_embed[band]
        torch.testing.assert_close(out[:, band * CELLS:(band + 1) * CELLS], expected, atol=1e-5,
                                   rtol=1e-5)


def test_channel2d_select_bands_gives_the_full_inputs_tokens_and_positions():
    model = tiny("channel2d").eval()
    x = rasters(13)
    chosen = [2, 5, 7]
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model.encode(x)
        model.tokenizer.select_bands(chosen)
        assert model.tokenizer.grid((3, SIDE, SIDE)) == (3, 4, 4)
        with pytest.raises(ValueError, match="C=3"):
            model.tokenizer.grid((13, SIDE, SIDE))
        model.encode(x[:, chosen])
    full, subset = seen[0][:, 1:], seen[1][:, 1:]  # the encoder's input, cls token dropped
    rows = torch.cat([torch.arange(b * CELLS, (b + 1) * CELLS) for b in chosen])
    assert subset.shape == (B, 3 * CELLS, 32)
    torch.testing.assert_close(subset, full[:, rows], atol=1e-6, rtol=1e-6)  # tokens + positions
    model.tokenizer.select_bands(None)
    assert model.tokenizer.grid((13, SIDE, SIDE)) == (13, 4, 4)
    for bad in ([13], [1, 1], []):
        with pytest.raises(ValueError, match="select_bands"):
            model.tokenizer.select_bands(bad)


# -- positions shared over the leading axis -------------------------------------------------------
def test_positions_are_shared_across_bands_and_unchanged_for_patch2d():
    model = tiny("channel2d")
    like = torch.zeros(1)
    table = model.pos_embed((3, 4, 4), 32, like)  # [48, 32]
    spatial = sincos_pos_embed(32, (4, 4))  # [16, 32]
    for band in range(3):
        assert torch.equal(table[band * CELLS:(band + 1) * CELLS], spatial)
    # the decoder's mask tokens also need to know their band: a fixed index table on top
    decoder = model.pos_embed((3, 4, 4), 32, like, decoder=True) - table  # [48, 32]
    planes = decoder.view(3, CELLS, 32)
    torch.testing.assert_close(planes, planes[:, :1].expand(-1, CELLS, -1))  # same over space
    assert not torch.equal(planes[0], planes[1])
    plain = mim.create_model("mae_vit_tiny_patch16", **TINY)
    assert torch.equal(plain.pos_embed((4, 4), 32, like), sincos_pos_embed(32, (4, 4)))
    assert torch.equal(plain.pos_embed((4, 4), 32, like, decoder=True),
                       sincos_pos_embed(32, (4, 4)))


def test_decoder_tells_the_bands_of_one_cell_apart():
    """Two masked tokens at one spatial cell, of two bands: with positions alone the decoder
    would see two identical mask tokens and predict the same values for both."""
    model = tiny("channel2d").eval()
    x = rasters(13, batch=1)
    mask = torch.zeros(1, 13 * CELLS, dtype=torch.bool)
    mask[0, [3, CELLS + 3]] = True  # cell 3 of bands 0 and 1
    with torch.no_grad():
        pred = model(x, mask).pred[0]  # [L, p*p]
    assert not torch.allclose(pred[3], pred[CELLS + 3])


def test_learned_table_is_on_the_spatial_grid_and_shared():
    model = tiny("group2d", pos_embed="learned", pos_grid=[4, 4]).eval()
    assert model.learned_pos_embed.table.shape == (CELLS, 32)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = rasters(10)
    with torch.no_grad():
        model.encode(x)
        tokens = model.tokenizer(x, None)
    pos = (seen[0][:, 1:] - tokens).view(B, 3, CELLS, 32)
    torch.testing.assert_close(pos, model.learned_pos_embed.table.expand(B, 3, -1, -1))


# -- spectral2d ---------------------------------------------------------------------------------
def test_spectral2d_layout_and_forward_is_the_generated_conv():
    tok = tokenizer("spectral2d")
    x = rasters(13)
    assert tok.leading_axes == 0 and tok.grid(x.shape[1:]) == (4, 4)
    assert tok.patch_dim == P * P * 13
    y = tok.patchify(x)
    assert torch.equal(y, Patch2dTokenizer(13, 16, patch_size=P).patchify(x))
    assert torch.equal(tok.unpatchify(y, (4, 4)), x)
    weight, bias = tok.kernels()
    assert weight.shape == (16, 13 * P * P) and bias.shape == (16,)
    conv = conv_tokens(x, weight.view(16, 13, P, P), bias)  # [D, (c ph pw)] is the conv kernel
    torch.testing.assert_close(tok(x, None), conv, atol=1e-5, rtol=1e-5)


def test_spectral2d_takes_another_band_set():
    tok = tokenizer("spectral2d")
    weight, _ = tok.kernels()
    tok.set_wavelengths([w + 0.05 for w in S2])  # same count, other sensor
    shifted, _ = tok.kernels()
    assert shifted.shape == weight.shape and not torch.allclose(shifted, weight)
    tok.set_wavelengths([0.49, 0.56, 0.665, 0.842])  # four bands of another sensor
    x = rasters(4)
    assert tok.grid(x.shape[1:]) == (4, 4) and tok(x, None).shape == (B, CELLS, 16)
    with pytest.raises(ValueError, match="C=4"):
        tok(rasters(13), None)
    tok.select_bands([1, 2, 3, 7])  # the run's bands by index
    assert tok.wavelengths.tolist() == pytest.approx([0.490, 0.560, 0.665, 0.842])
    tok.select_bands(None)
    assert tok.wavelengths.tolist() == pytest.approx(S2)


def test_spectral2d_state_dict_carries_the_wavelengths():
    model = tiny("spectral2d")
    state = model.state_dict()
    assert torch.allclose(state["tokenizer.wavelengths"], torch.tensor(S2))
    other = tiny("spectral2d")
    other.tokenizer.set_wavelengths([0.5, 0.6])
    other.load_state_dict(state)
    assert other.tokenizer.num_bands == 13
    assert torch.equal(other.tokenizer.wavelengths, model.tokenizer.wavelengths)


def test_spectral2d_config_errors_name_the_key():
    key = "data.wavelengths"
    assert "set data.wavelengths" in one_line_error(
        lambda: model_config("mae_vit_tiny_patch16", tokenizer={"name": "spectral2d"}), key)
    one_line_error(lambda: model_config("mae_vit_tiny_patch16", tokenizer={
        "name": "spectral2d", "wavelengths": [0.5, -0.1]}), key)
    cfg = model_config("mae_vit_tiny_patch16", patch_size=P,
                       tokenizer={"name": "spectral2d", "wavelengths": S2})
    assert "13 wavelengths" in one_line_error(lambda: token_grids(cfg, (12, SIDE, SIDE)), key)
    one_line_error(lambda: model_config("mae_vit_tiny_patch16", tokenizer={
        "name": "spectral2d", "wavelengths": S2, "generator_dim": 30, "generator_heads": 4}),
        "model.tokenizer.generator_heads")


# -- every one through create_model, and it learns ------------------------------------------------
@pytest.mark.parametrize("name", ["group2d", "channel2d", "spectral2d"])
def test_builds_through_create_model_and_trains(name):
    model = tiny(name)
    x = rasters(BANDS[name])
    grid = model.tokenizer.grid(x.shape[1:])
    assert token_grids(model_config("mae_vit_tiny_patch16", tokenizer=TOKENIZER[name], **TINY),
                       x.shape[1:]) == (grid, grid)
    length = math.prod(grid)
    mask = seeded_mask(B, length, length * 3 // 4)
    out = model(x, mask)
    assert out.pred.shape == (B, length, model.tokenizer.patch_dim)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = model(x, mask).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


# -- masks ----------------------------------------------------------------------------------------
def test_random_mask_defaults_draw_todays_masks():
    for grid in ((4, 4), (3, 4, 4), (13, 4, 4)):
        n = math.prod(grid)
        k = n - int(n * 0.25)
        for seed in range(5):
            reference = torch.zeros(n, dtype=torch.bool)
            reference[torch.randperm(n, generator=gen(seed))[:k]] = True  # MAE's draw
            assert torch.equal(RandomMask(0.75)(grid, gen(seed)), reference)
            assert torch.equal(RandomMask(0.75, "independent", 0.0)(grid, gen(seed)), reference)


def test_consistent_groups_repeat_one_spatial_mask():
    policy = build_mask("random", ratio=0.75, groups="consistent")
    grid = (3, 4, 4)
    assert policy.num_masked(grid) == 3 * 12
    for seed in range(5):
        mask = policy(grid, gen(seed)).view(3, CELLS)
        assert torch.equal(mask, mask[:1].expand(3, -1)) and int(mask[0].sum()) == 12
    assert torch.equal(policy(grid, gen(1)), policy(grid, gen(1)))
    message = one_line_error(lambda: policy.check((4, 4)), "mask.groups")
    assert "leading band or group axis" in message
    one_line_error(lambda: RandomMask(0.75, groups="some"), "mask.groups")


def test_band_dropout_hides_whole_bands_and_keeps_the_count():
    grid = (13, 4, 4)
    policy = RandomMask(0.75, band_dropout=0.5)
    count = RandomMask(0.75).num_masked(grid)
    assert policy.num_masked(grid) == count == 156  # exactly MAE's count in every row

    def whole(mask):
        return int(mask.view(13, CELLS).all(dim=1).sum())

    draws = [policy(grid, gen(seed)) for seed in range(40)]
    assert all(int(m.sum()) == count for m in draws)
    assert sum(map(whole, draws)) / 40 > 4  # about 13 * 0.5 bands hidden whole
    assert sum(whole(RandomMask(0.75)(grid, gen(s))) for s in range(40)) / 40 < 1
    # the bands that drew under 0.5 are the ones hidden (seeded by the generator)
    for seed in range(10):
        under = torch.rand(13, generator=gen(seed)) < 0.5
        if int(under.sum()) > count // CELLS:
            continue  # more drawn than fit: the cap keeps the lowest draws
        hidden = policy(grid, gen(seed)).view(13, CELLS).all(dim=1)
        assert bool(hidden[under].all())
    assert torch.equal(policy(grid, gen(3)), policy(grid, gen(3)))
    capped = RandomMask(0.75, band_dropout=0.99)  # 13 drawn, only 156 // 16 = 9 fit
    for seed in range(10):
        mask = capped(grid, gen(seed))
        assert int(mask.sum()) == count and whole(mask) == 9


def test_band_dropout_errors_name_the_key():
    one_line_error(lambda: RandomMask(0.75, band_dropout=1.0), "mask.band_dropout")
    one_line_error(lambda: RandomMask(0.75, band_dropout=0.2).check((4, 4)), "mask.band_dropout")
    one_line_error(lambda: RandomMask(0.75, groups="consistent", band_dropout=0.2),
                   "mask.band_dropout")
