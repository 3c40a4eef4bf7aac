"""model.decoder_window: the decoder's attention within windows of the token grid, shifted in
odd blocks (Swin; AudioMAE's local decoder). The global path is unchanged, a window sees only
its own tokens, shifted windows mix across borders but not around the wrap, the model trains,
validation refuses in one line, and the FLOPs count the windows."""
from __future__ import annotations

import itertools
import json
import math

import mim
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from mim.cli import main
from mim.masking import RandomMask, build_mask
from mim.models.blocks import Block, WindowBlock, shifted_window_mask
from mim.models.factory import ModelConfig, build_model, check_decoder_grid, model_config
from mim.models.flops import forward_flops

DIM, HEADS = 32, 4


def pair(window, shift=None, seed: int = 0) -> tuple[Block, WindowBlock]:
    """A Block and a WindowBlock with the same weights."""
    torch.manual_seed(seed)
    block = Block(DIM, HEADS).eval()
    windowed = WindowBlock(DIM, HEADS, window, shift).eval()
    windowed.load_state_dict(block.state_dict())  # the same parameter names
    return block, windowed


def tokens(grid, prefix: int = 0, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, prefix + math.prod(grid), DIM,
                       generator=torch.Generator().manual_seed(seed))


def old_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Block.forward as it was before windows: sdpa with no mask argument."""
    h = block.norm1(x)
    q, k, v = rearrange(block.attn.qkv(h), "b n (three h d) -> three b h n d", three=3,
                        h=block.attn.num_heads)
    a = block.attn.proj(rearrange(F.scaled_dot_product_attention(q, k, v),
                                  "b h n d -> b n (h d)"))
    x = x + a
    return x + block.mlp(block.norm2(x))


def allowed(grid, window, shift) -> torch.Tensor:
    """bool [L, L] by brute force from coordinates: the same (shifted) window, and the same side
    of the wrap along every shifted axis."""
    coords = list(itertools.product(*(range(g) for g in grid)))

    def key(c):
        rolled = [(x - s) % g for x, s, g in zip(c, shift, grid)]
        side = [0 if not s else (r >= g - w) + (r >= g - s)
                for r, g, w, s in zip(rolled, grid, window, shift)]
        return tuple(r // w for r, w in zip(rolled, window)), tuple(side)

    keys = [key(c) for c in coords]
    return torch.tensor([[a == b for b in keys] for a in keys])


def reference(block: Block, x: torch.Tensor, grid, window, shift, prefix: int) -> torch.Tensor:
    """A windowed block as one global attention under the brute-force mask."""
    head, rest = x[:, :prefix], x[:, prefix:]
    rest = rest + block.attn(block.norm1(rest), allowed(grid, window, shift)[None, None])
    x = torch.cat([head, rest], dim=1)
    return x + block.mlp(block.norm2(x))


def test_the_global_path_is_the_block_it_was():
    block, _ = pair((2, 2))
    x = tokens((4, 4), prefix=1)
    with torch.no_grad():
        assert torch.equal(block(x), old_block(block, x))
    model = mim.create_model("mae_vit_base_patch16", embed_dim=32, depth=1, num_heads=2,
                             decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2,
                             patch_size=8)
    assert model.decoder_window is None
    assert all(type(b) is Block for b in model.decoder_blocks)


@pytest.mark.parametrize("grid, window, prefix", [((4, 8), (2, 4), 1), ((4, 4, 4), (2, 2, 2), 0),
                                                  ((64, 8), (4, 4), 1)])
def test_output_shape(grid, window, prefix):
    _, windowed = pair(window, tuple(w // 2 for w in window))
    x = tokens(grid, prefix)
    assert windowed(x, grid, prefix).shape == x.shape


def test_a_window_of_the_whole_grid_is_global_attention():
    block, windowed = pair((4, 6))
    x = tokens((4, 6))
    with torch.no_grad():
        torch.testing.assert_close(windowed(x, (4, 6), 0), block(x), rtol=1e-6, atol=1e-6)
    # a shift along an axis one window spans is no shift (Swin)
    _, shifted = pair((4, 6), (2, 3))
    with torch.no_grad():
        torch.testing.assert_close(shifted(x, (4, 6), 0), block(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("grid, window, shift", [
    ((4, 4), (2, 2), (0, 0)), ((4, 4), (2, 2), (1, 1)), ((8, 4), (4, 2), (2, 0)),
    ((6, 4), (3, 2), (1, 1)), ((4, 4, 4), (2, 2, 2), (1, 1, 1)), ((4, 8), (2, 4), (1, 0))])
def test_windows_match_brute_force_masked_attention(grid, window, shift):
    block, windowed = pair(window, shift)
    x = tokens(grid, prefix=1)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x, grid, 1),
                                   reference(block, x, grid, window, shift, 1),
                                   rtol=1e-5, atol=1e-5)


def changed(block: WindowBlock, grid, at: tuple[int, ...], prefix: int = 1) -> torch.Tensor:
    """bool [*grid]: the grid tokens whose output moves when the token ``at`` is perturbed."""
    x = tokens(grid, prefix)
    y = x.clone()
    index = prefix + sum(c * math.prod(grid[k + 1:]) for k, c in enumerate(at))
    y[:, index] += 10.0
    with torch.no_grad():
        diff = (block(x, grid, prefix) - block(y, grid, prefix)).abs().amax(dim=(0, 2))
    assert diff[0] == 0  # the cls token takes no part in windowed attention
    return (diff[prefix:] > 0).reshape(grid)


def test_a_token_sees_only_its_window():
    _, windowed = pair((2, 2))
    moved = changed(windowed, (4, 4), at=(3, 3))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[2:, 2:] = True  # the bottom-right window
    assert torch.equal(moved, expected)


def test_shifted_windows_mix_across_borders_but_not_around_the_wrap():
    _, shifted = pair((2, 2), (1, 1))
    inner = changed(shifted, (4, 4), at=(1, 1))  # rolled to (0, 0): window with rows/cols 1-2
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True  # crosses the borders of the unshifted 2 x 2 windows
    assert torch.equal(inner, expected)
    corner = changed(shifted, (4, 4), at=(3, 3))  # the window that wraps: only its own side
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[3, 3] = True  # (0, 0), (0, 3), (3, 0) share its window but not its side
    assert torch.equal(corner, expected)
    mask = shifted_window_mask((4, 4), (2, 2), (1, 1))
    assert mask.shape == (4, 4, 4) and mask[0].all() and mask.diagonal(dim1=1, dim2=2).all()


TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=2,
            decoder_num_heads=2, patch_size=8)


@pytest.mark.parametrize("overrides, shape", [
    ({"decoder_window": [2, 2]}, (3, 32, 32)),
    ({"decoder_window": [2, 2], "decoder_window_shift": [1, 0],
      "activation_checkpointing": "decoder"}, (3, 32, 32)),
    ({"decoder_window": [2, 2], "cls_token": False}, (3, 32, 32)),
    ({"decoder_window": [1, 2, 2], "tokenizer": "cube", "tubelet_size": 2}, (3, 4, 32, 32)),
])
def test_the_model_trains_a_step(overrides, shape):
    torch.manual_seed(0)
    model = mim.create_model("mae_vit_base_patch16", **{**TINY, **overrides})
    assert [type(b) for b in model.decoder_blocks] == [WindowBlock, WindowBlock]
    assert model.decoder_blocks[0].shift == (0,) * len(overrides["decoder_window"])
    grid = model.tokenizer.grid(shape)
    x = torch.randn(2, *shape)
    mask = torch.stack([RandomMask(0.75)(grid, torch.Generator().manual_seed(s))
                        for s in range(2)])
    out = model(x, mask)
    assert out.pred.shape == (2, math.prod(grid), model.tokenizer.patch_dim)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    decoder = [p.grad for n, p in model.named_parameters() if n.startswith("decoder_blocks")]
    assert all(g is not None and torch.isfinite(g).all() for g in decoder)


def test_decoder_masking_is_refused_with_windows():
    model = mim.create_model("mae_vit_base_patch16", **TINY, decoder_window=[2, 2])
    policy = build_mask("running_cell", ratio=0.75, encoder="random")
    mask = policy((4, 4), torch.Generator().manual_seed(0))[None]
    targets = policy.targets((4, 4), torch.Generator().manual_seed(0), mask[0])[None]
    with pytest.raises(ValueError, match="^model.decoder_window: windowed attention needs"):
        model(torch.randn(1, 3, 32, 32), mask, targets)
    with pytest.raises(ValueError, match="mask=running_cell"):
        check_decoder_grid(model_config("mae_vit_base_patch16", decoder_window=[2, 2]), (4, 4),
                           policy)


@pytest.mark.parametrize("settings, says", [
    ({"decoder_window": [0, 2]}, "model.decoder_window: one positive integer per grid axis"),
    ({"decoder_window": []}, "model.decoder_window: one positive integer"),
    ({"decoder_window_shift": [1, 1]}, "model.decoder_window_shift: only with"),
    ({"decoder_window": [4, 4], "decoder_window_shift": [4, 0]},
     "model.decoder_window_shift: one integer per window axis in [0, window)"),
    ({"decoder_window": [4, 4], "decoder_window_shift": [2]}, "model.decoder_window_shift"),
])
def test_the_config_refuses_bad_windows(settings, says):
    with pytest.raises(ValueError) as err:
        ModelConfig(**settings)
    assert str(err.value).startswith(says)


def test_a_window_must_divide_the_grid():
    cfg = model_config("mae_vit_base_patch16", decoder_window=[4, 3])
    with pytest.raises(ValueError) as err:
        check_decoder_grid(cfg, (64, 8))
    assert str(err.value) == ("model.decoder_window: [4, 3] does not divide the token grid "
                              "[64, 8]; valid: a divisor of each axis, {1,2,4,8,16,32,64} x "
                              "{1,2,4,8}")
    with pytest.raises(ValueError, match=r"^model.decoder_window: \[4, 4\] has 2 sizes, the "
                                         r"token grid \[2, 8, 8\] has 3 axes"):
        check_decoder_grid(model_config("mae_vit_base_patch16", decoder_window=[4, 4]),
                           (2, 8, 8))
    check_decoder_grid(model_config("mae_vit_base_patch16", decoder_window=[4, 4]), (64, 8))
    check_decoder_grid(model_config("mae_vit_base_patch16"), (7, 5))  # no window: no rule


FAST = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=48",
        "model.depth=2", "model.num_heads=3", "model.decoder_embed_dim=32",
        "model.decoder_depth=2", "model.decoder_num_heads=2", "train.batch_size=8",
        "train.num_workers=0", "train.precision=fp32"]


def derived_of(out: str) -> dict:
    return {key: json.loads(value) for key, value in
            (line.split(": ", 1) for line in out.split("# derived")[1].splitlines()[1:])}


def test_validation_refuses_in_one_line_and_counts_fewer_flops(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "model.decoder_window=[3,2]", "--cfg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.decoder_window: [3, 2] does not divide the token grid [4, 4]" in err
    flops = {}
    for window in ("null", "[2,2]"):
        assert main(["train", *FAST, f"model.decoder_window={window}",
                     f"run.dir={tmp_path / 'run'}", "--cfg"]) == 0
        flops[window] = derived_of(capsys.readouterr().out)["decoder_gflops"]
    assert 0 < flops["[2,2]"] < flops["null"]


def attention_flops(tokens: int, window: int, dim: int, depth: int) -> int:
    return depth * 4 * tokens * window * dim  # QK^T and AV in windows of ``window`` tokens


@pytest.mark.parametrize("window, shape", [([2, 2], (3, 64, 64)), ([1, 4], (3, 64, 64)),
                                           ([1, 2, 2], (3, 4, 32, 32))])
def test_the_flops_are_torchs_plus_windowed_attention(window, shape):
    cube = {"tokenizer": "cube", "tubelet_size": 2, "patch_size": 8} if len(shape) == 4 else {}
    cfg = model_config("mae_vit_tiny_patch16", decoder_depth=2, decoder_embed_dim=64,
                       decoder_num_heads=2, decoder_window=window, **cube)
    torch.manual_seed(0)
    model = build_model(cfg, shape[0]).eval()
    grid = model.tokenizer.mask_grid(shape)
    mask = RandomMask(0.75)(grid, torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoded = model.encode(torch.randn(1, *shape), mask[None])
        model.decode(encoded)
    flops = forward_flops(cfg, shape, mask)
    seen = (cfg.depth * 4 * encoded.tokens.shape[1] ** 2 * cfg.embed_dim
            + attention_flops(math.prod(grid), math.prod(window), 64, 2))
    total = (flops["encoder_gflops"] + flops["decoder_gflops"]) * 1e9
    assert total == pytest.approx(counter.get_total_flops() + seen, rel=1e-9)
