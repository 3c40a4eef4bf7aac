"""The transformer block: timm's parameter names and outputs, and attention's CPU precision."""
from __future__ import annotations

import functools

import pytest
import torch
from timm.layers import DropPath as TimmDropPath
from timm.models.vision_transformer import Block as TimmBlock

from mim.models.blocks import CPU_FP32_ATTENTION_MAX_TOKENS, Block, DropPath, attend


def test_a_timm_block_state_dict_loads_and_gives_the_same_output():
    torch.manual_seed(0)
    theirs = TimmBlock(64, 4, 4.0, qkv_bias=True,
                       norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
    ours = Block(64, 4, 4.0, qkv_bias=True, eps=1e-6)
    ours.load_state_dict(theirs.state_dict())  # strict: raises unless names and shapes match
    x = torch.randn(2, 17, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_drop_path_draws_and_scales_like_timms(p):
    x = torch.randn(64, 5, 8)
    outs = []
    for layer in (DropPath(p), TimmDropPath(p)):
        torch.manual_seed(3)
        outs.append(layer.train()(x))
        assert torch.equal(layer.eval()(x), x)  # identity outside training
    assert torch.equal(outs[0], outs[1])
    if p < 1.0:  # whole samples dropped, the kept ones scaled by 1 / (1 - p)
        kept = outs[0].flatten(1).ne(0).any(1)
        assert 0 < kept.sum() < 64
        torch.testing.assert_close(outs[0][kept], x[kept] / (1 - p))


def test_a_block_with_drop_path_trains_like_timms():
    torch.manual_seed(0)
    theirs = TimmBlock(32, 4, 4.0, qkv_bias=True, drop_path=0.3,
                       norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
    ours = Block(32, 4, 4.0, qkv_bias=True, drop_path=0.3, eps=1e-6)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(16, 9, 32)
    outs = []
    for block in (ours, theirs):
        torch.manual_seed(1)
        outs.append(block.train()(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tokens, fp32", [(50, True), (CPU_FP32_ATTENTION_MAX_TOKENS, True),
                                          (CPU_FP32_ATTENTION_MAX_TOKENS + 1, False)])
def test_short_bf16_attention_on_a_cpu_is_computed_in_fp32(tokens, fp32):
    q, k, v = torch.randn(3, 1, 2, tokens, 16).bfloat16()
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = attend(q, k, v)
    assert out.dtype == torch.bfloat16  # what autocast's neighbours expect
    assert torch.equal(out, exact.bfloat16()) == fp32


def test_regional_compilation_takes_the_modules_that_declare_themselves_units() -> None:
    """train.compile=blocks asks each module (``compile_unit``), so a plugin's own block is
    compiled as mim's are, and nothing else is."""
    import torch

    from mim import create_model
    from mim.engine.compiling import compile_blocks

    class PluginBlock(torch.nn.Module):
        compile_unit = True

        def forward(self, x):
            return x

    model = create_model("mcmae_base", embed_dim=32, depth=2, num_heads=2, patch_size=8,
                         tokenizer={"dims": [8, 16], "depths": [1, 1]}, decoder_embed_dim=16,
                         decoder_depth=1, decoder_num_heads=2)
    model.extra = torch.nn.Sequential(PluginBlock(), torch.nn.Linear(2, 2))
    # 2 encoder + 1 decoder transformer blocks, 2 conv blocks, the plugin's
    assert compile_blocks(model) == 2 + 1 + 2 + 1
