"""The pre-norm transformer block of ViT and MAE, with timm's parameter names.

``norm1``, ``attn.qkv`` (fused q/k/v), ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``: a
state dict of these blocks is one of timm's ``VisionTransformer`` blocks and MAE's, so weights
move between them with no renaming (``mim/convert``). Attention is PyTorch's fused
``scaled_dot_product_attention``; ``attend`` picks its precision on the CPU (below).

``Mlp`` and ``DropPath`` are ours, not timm's (the same parameters and numbers, checked against
timm in tests/unit/test_blocks.py): importing timm imports torchvision and with it
``torch._dynamo``, 1.9 of the 5 seconds a one-step ``mim train`` took to start on a Zen 4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# Up to this many tokens, bf16 attention on a CPU is computed in fp32 (``attend``)
CPU_FP32_ATTENTION_MAX_TOKENS = 512


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention, q, k, v [B, heads, N, head_dim] -> [B, heads, N, head_dim].

    Under bf16 autocast on a CPU, short sequences run the fused kernel in fp32: PyTorch's CPU
    flash-attention kernel is slower in bf16 than in fp32 there (forward + backward on Zen 4:
    71 against 50 ms for the MAE decoder's [8, 16, 197, 32], 17 against 7.5 ms for the ViT-B
    encoder's [8, 12, 50, 64], equal at [2, 12, 512, 64]) and faster beyond (316 against
    373 ms for a VideoMAE decoder's [2, 6, 1568, 64]). The matrix products around it stay in
    bf16. Elsewhere (CUDA, XLA) autocast decides.
    """
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16
            and q.shape[-2] <= CPU_FP32_ATTENTION_MAX_TOKENS):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, x [..., dim] -> [..., dim] (timm's ``Mlp`` names, no dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, each sample's residual branch is
    dropped with probability ``p`` and the kept ones scaled by 1 / (1 - p); x [B, ...]."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # one draw per sample, broadcast over its other axes: [B, 1, ..., 1]
        kept = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * kept.div_(keep) if keep > 0 else x * kept

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3,
                            h=self.num_heads)
        return self.proj(rearrange(attend(q, k, v), "b h n d -> b n (h d)"))


class Block(nn.Module):
    """x + DropPath(Attention(LN(x))), then x + DropPath(MLP(LN(x))); x [B, N, dim]."""

    compile_unit = True  # train.compile=blocks compiles each block (mim/engine/compiling.py)

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
