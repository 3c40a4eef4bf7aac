"""Space-time pieces of the core: tube and running-cell masks, separable position embeddings,
decoding a subset of tokens, several views per sample, and transfer across frame counts."""
from __future__ import annotations

import math

import mim
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from mim.data import MaskingCollate, Sample
from mim.masking import MaskConfigError, RunningCellMask, TubeMask, build_mask
from mim.models.pos_embed import separable_sincos_pos_embed, sincos_1d, sincos_pos_embed

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8, tubelet_size=2)
grids3 = st.tuples(st.integers(1, 4), st.integers(2, 6), st.integers(2, 6))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(grid=grids3, ratio=st.floats(0.1, 0.9), seed=st.integers(0, 2**31))
def test_tube_mask_is_identical_across_time(grid, ratio, seed):
    n_space = grid[1] * grid[2]
    assume(1 <= int(n_space * (1 - ratio)) < n_space)
    policy = TubeMask(ratio=ratio)
    mask = policy(grid, gen(seed)).view(grid)  # [t, h, w]
    assert torch.equal(mask, mask[:1].expand_as(mask))
    assert int(mask.sum()) == policy.num_masked(grid)


def test_tube_with_block_inner_respects_the_spatial_unit():
    policy = TubeMask(ratio=0.5, inner="block", unit=[2, 2])
    mask = policy((3, 4, 6), gen(1)).view(3, 2, 2, 3, 2)  # [t, h/2, uh, w/2, uw]
    cells = mask.permute(0, 1, 3, 2, 4).reshape(3, 2, 3, 4)
    assert bool((cells.all(-1) | ~cells.any(-1)).all())


def test_tube_needs_a_time_axis_and_a_valid_inner():
    with pytest.raises(MaskConfigError, match="tube"):
        TubeMask().check((14, 14))
    with pytest.raises(MaskConfigError, match="mask.inner"):
        TubeMask(inner="spiral")


@given(grid=grids3, seed=st.integers(0, 2**31), decoder_ratio=st.sampled_from([0.25, 0.5, 0.75]))
def test_running_cell_targets_are_a_static_subset_of_the_masked_tokens(grid, seed, decoder_ratio):
    assume(grid[1] * grid[2] >= 10)
    policy = RunningCellMask(ratio=0.8, decoder_ratio=decoder_ratio)
    g = gen(seed)
    mask = policy(grid, g)
    targets = policy.targets(grid, g, mask)
    assert int(targets.sum()) == policy.num_targets(grid)
    assert not bool((targets & ~mask).any())


def test_running_cell_prefers_a_cell_pattern_that_moves_over_time():
    policy = RunningCellMask(ratio=0.5, encoder="random", decoder_ratio=0.5)
    grid = (4, 8, 8)
    mask = torch.ones(math.prod(grid), dtype=torch.bool)  # all masked: the pattern decides
    targets = policy.targets(grid, gen(0), mask).view(grid)
    assert int(targets.sum()) == policy.num_targets(grid) == 64
    h, w = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    offset = (h % 2) * 2 + w % 2  # position inside a 2x2 cell
    for t in range(4):
        preferred = (offset + t) % 4 < 2  # half of each cell, shifted by one every step
        assert not bool((targets[t] & ~preferred).any()), t
    assert not torch.equal((offset + 0) % 4 < 2, (offset + 1) % 4 < 2)


def test_running_cell_config_errors():
    with pytest.raises(MaskConfigError, match="mask.decoder_ratio"):
        RunningCellMask(decoder_ratio=1.0)
    with pytest.raises(MaskConfigError, match="mask.encoder"):
        build_mask("running_cell", encoder="running_cell")


def test_decoding_a_subset_scores_only_the_targets():
    model = mim.create_model("videomae_vit_small_patch16_16x224", **TINY)
    x = torch.randn(2, 3, 4, 16, 16)
    grid = model.tokenizer.grid(x.shape[1:])  # (2, 2, 2)
    policy = RunningCellMask(ratio=0.5, encoder="random", decoder_ratio=0.5)
    g = gen(3)
    mask = torch.stack([policy(grid, g) for _ in range(2)])
    targets = torch.stack([policy.targets(grid, g, m) for m in mask])
    out = model(x, mask, targets)
    decoded = out.pred.abs().sum(-1) > 0  # [B, L]
    assert torch.equal(decoded, ~mask | targets)
    per_token = ((out.pred - model.target(x)) ** 2).mean(-1)
    expected = (per_token * targets).sum() / targets.sum()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.decoder_pred.weight.grad.abs().sum() > 0


def test_decoder_masking_is_shown_counted_and_drawn():
    from mim.config.compose import load
    from mim.masking import decoder_targets
    from mim.preview import derived
    from mim.reconstruction import reconstruction_panels

    model = mim.create_model("videomae_vit_small_patch16_16x224", **TINY)
    x = torch.randn(2, 3, 4, 16, 16)
    grid = model.tokenizer.grid(x.shape[1:])  # (2, 2, 2)
    policy = RunningCellMask(ratio=0.5, encoder="random", decoder_ratio=0.5)
    assert decoder_targets(policy, grid) == 2 and decoder_targets(TubeMask(0.5), grid) is None
    g = gen(3)
    mask = torch.stack([policy(grid, g) for _ in range(2)])
    targets = torch.stack([policy.targets(grid, g, m) for m in mask])
    panels = reconstruction_panels(model, x, mask, targets)
    recon = model.tokenizer.patchify(panels.reconstruction)  # [B, L, P]
    patches = model.tokenizer.patchify(x)
    low, high = patches.amin(dim=(1, 2)), patches.amax(dim=(1, 2))  # [B]
    for b in range(2):  # unscored masked tokens striped low / high; scored ones predicted
        for token in range(recon.shape[1]):
            striped = bool(torch.equal(recon[b, token, 0::2], low[b].expand(recon.shape[-1] // 2))
                           and torch.equal(recon[b, token, 1::2],
                                           high[b].expand(recon.shape[-1] // 2)))
            assert striped == bool(mask[b, token] and not targets[b, token])
    values = derived(load(["modality=video", "mask=running_cell", "data.input_size=32",
                           "model.patch_size=8", "data.num_frames=4", "mask.ratio=0.5",
                           "train.batch_size=4"]))
    assert values["masked_tokens"] == 16 and values["decoder_targets"] == 8  # 2x4x4 grid


def test_separable_embedding_is_space_plus_time():
    table = separable_sincos_pos_embed(32, (3, 4, 5)).view(3, 20, 32)
    space = sincos_pos_embed(32, (4, 5))
    time = sincos_1d(32, torch.arange(3)).float()
    torch.testing.assert_close(table, time[:, None] + space[None])
    assert torch.equal(separable_sincos_pos_embed(32, (4, 5)), space)


@pytest.mark.parametrize("name", ["videomae_vit_small_patch16_16x224",
                                  "maest_vit_base_patch16_16x224"])
def test_a_model_trained_on_16_frames_runs_on_8_and_32(name):
    trained = mim.create_model(name, **TINY)
    state = trained.state_dict()
    for frames in (8, 32):
        model = mim.create_model(name, **TINY)
        model.load_state_dict(state)  # no position table in the weights: sin-cos per grid
        x = torch.randn(1, 3, frames, 16, 16)
        grid = model.tokenizer.grid(x.shape[1:])
        assert grid[0] == frames // 2
        mask = TubeMask(ratio=0.75)(grid, gen(0)).unsqueeze(0)
        out = model(x, mask)
        assert out.pred.shape == (1, math.prod(grid), model.tokenizer.patch_dim)
        assert torch.isfinite(out.loss)


def test_collate_gives_every_view_its_own_mask():
    grid = (2, 4, 4)
    collate = MaskingCollate(TubeMask(ratio=0.5), grid)
    views = torch.randn(3, 1, 4, 8, 8)  # K=3 views [K, C, T, H, W]
    batch = collate([(Sample(views, label=5), 11), (Sample(views[0], label=6), 12)])
    assert batch.x.shape == (4, 1, 4, 8, 8)
    assert batch.label.tolist() == [5, 5, 5, 6]
    assert batch.mask.shape == (4, 32)
    assert len({tuple(m.tolist()) for m in batch.mask[:3]}) == 3
    assert batch.targets is None
