"""derived.json's encoder_gflops / decoder_gflops: equal to torch's FlopCounterMode on a real
forward (every matmul and convolution) plus the attention matmuls, counted from the shapes."""
from __future__ import annotations

import math

import mim  # noqa: F401
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mim.models.factory import build_model, model_config
from mim.models.flops import forward_flops

CASES = {
    "patch2d": ("mae_vit_tiny_patch16", {}, (3, 64, 64)),
    "channel2d": ("mae_vit_tiny_patch16", {"patch_size": 8, "tokenizer": "channel2d"},
                  (5, 32, 32)),
    "group2d": ("mae_vit_tiny_patch16", {"patch_size": 8, "tokenizer": {
        "name": "group2d", "groups": [[0, 1], [2, 3, 4]]}}, (5, 32, 32)),
    "cube": ("mae_vit_tiny_patch16", {"patch_size": 8, "tokenizer": "cube",
                                      "tubelet_size": 2}, (3, 4, 32, 32)),
    "hybrid2d": ("mcmae_base", {"embed_dim": 96, "depth": 2, "num_heads": 3,
                                "tokenizer": {"dims": [16, 32], "depths": [1, 1]}},
                 (3, 64, 64)),
}


def attention(tokens: int, dim: int, depth: int) -> int:
    return depth * 4 * tokens * tokens * dim  # QK^T and AV per block


@pytest.mark.parametrize("case", list(CASES))
def test_the_count_is_torchs_plus_attention(case):
    name, overrides, shape = CASES[case]
    cfg = model_config(name, decoder_depth=1, decoder_embed_dim=64, decoder_num_heads=2,
                       **overrides)
    torch.manual_seed(0)
    model = build_model(cfg, shape[0]).eval()
    grid = model.tokenizer.mask_grid(shape)
    mask = torch.zeros(math.prod(grid), dtype=torch.bool)
    mask[torch.randperm(mask.numel())[: mask.numel() * 3 // 4]] = True
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoded = model.encode(torch.randn(1, *shape), mask[None])
        model.decode(encoded)
    flops = forward_flops(cfg, shape, mask)
    tokens = encoded.tokens.shape[1]  # prefix + Lv
    decoded = int(cfg.cls_token) + math.prod(model.tokenizer.grid(shape))
    seen = attention(tokens, cfg.embed_dim, cfg.depth) + attention(decoded, 64, 1)
    total = (flops["encoder_gflops"] + flops["decoder_gflops"]) * 1e9
    assert total == pytest.approx(counter.get_total_flops() + seen, rel=1e-9)


def test_decoder_masking_decodes_fewer_tokens():
    cfg = model_config("mae_vit_tiny_patch16", decoder_depth=1, decoder_embed_dim=64,
                       decoder_num_heads=2)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:12] = True
    every, part = forward_flops(cfg, (3, 64, 64), mask), forward_flops(cfg, (3, 64, 64), mask, 3)
    assert part["encoder_gflops"] == every["encoder_gflops"]
    assert part["decoder_gflops"] < every["decoder_gflops"]
