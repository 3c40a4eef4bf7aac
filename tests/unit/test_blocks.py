"""The transformer block: timm's parameter names and outputs, and attention's CPU precision."""
from __future__ import annotations

import functools

import pytest
import torch
from timm.models.vision_transformer import Block as TimmBlock

from mim.blocks import CPU_FP32_ATTENTION_MAX_TOKENS, Block, attend


def test_a_timm_block_state_dict_loads_and_gives_the_same_output():
    torch.manual_seed(0)
    theirs = TimmBlock(64, 4, 4.0, qkv_bias=True,
                       norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
    ours = Block(64, 4, 4.0, qkv_bias=True, eps=1e-6)
    ours.load_state_dict(theirs.state_dict())  # strict: raises unless names and shapes match
    x = torch.randn(2, 17, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tokens, fp32", [(50, True), (CPU_FP32_ATTENTION_MAX_TOKENS, True),
                                          (CPU_FP32_ATTENTION_MAX_TOKENS + 1, False)])
def test_short_bf16_attention_on_a_cpu_is_computed_in_fp32(tokens, fp32):
    q, k, v = torch.randn(3, 1, 2, tokens, 16).bfloat16()
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = attend(q, k, v)
    assert out.dtype == torch.bfloat16  # what autocast's neighbours expect
    assert torch.equal(out, exact.bfloat16()) == fp32
