"""Masked convolution blocks: the conv stages of a hybrid (MCMAE) tokenizer, in 2D and 3D.

MCMAE (Gao et al. 2022, Sec. 2.2): a conv block follows the transformer block and only replaces
self-attention by a depthwise convolution (5x5 by default; Table 5 tries 7x7 and 9x9). Here the
attention's input and output projections stay (as 1x1 maps, ``proj_in`` / ``proj_out``) and the
attention itself becomes the depthwise conv; in 3D the kernel is ``t x k x k``.

Masked convolution: masked positions are set to exactly zero before every operation that mixes
positions (the depthwise conv here; the stride convs between stages in the tokenizer). Every other
operation (LayerNorm over channels, the linear maps, the MLP) works per position, so a masked
position never reaches a visible one. Shapes: B batch, C channels, features channels-last
``[B, *grid, C]``, masks bool ``[B, *grid]`` with True = masked.
"""
from __future__ import annotations

import torch
from torch import nn

from mim.models.blocks import DropPath, Mlp


def zero_masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x [B, *grid, C], mask [B, *grid] or None -> x with masked positions exactly 0.

    ``torch.where``, not a product with the keep mask: 0 x inf would be nan and reach the conv.
    """
    return x if mask is None else torch.where(mask.unsqueeze(-1), 0.0, x)


class ConvBlock(nn.Module):
    """Pre-norm transformer block with a depthwise conv as token mixer, on a 2D or 3D grid."""

    compile_unit = True  # train.compile=blocks compiles each block (mim/engine/compiling.py)

    def __init__(self, dim: int, mlp_ratio: float, kernel: tuple[int, ...],
                 drop_path: float = 0.0):
        super().__init__()
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"depthwise kernel {kernel} must be odd (same-size padding)")
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[len(kernel)]
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # over channels: never mixes positions
        self.proj_in = nn.Linear(dim, dim)
        self.mix = conv(dim, dim, kernel, padding=tuple(k // 2 for k in kernel), groups=dim)
        self.proj_out = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, *grid, C], mask [B, *grid] (True = masked) or None -> [B, *grid, C]."""
        y = zero_masked(self.proj_in(self.norm1(x)), mask)  # [B, *grid, C]
        y = y.movedim(-1, 1)  # [B, C, *grid], a channels-last view
        if y.dim() == 5 and y.device.type == "cpu":
            # torch's CPU depthwise conv3d in bf16 returns a wrong weight gradient (relative
            # error ~1, and now and then NaN) for channels-last input; channels-first is exact
            y = y.contiguous()
        y = self.mix(y).movedim(1, -1)  # [B, *grid, C]
        x = x + self.drop_path(self.proj_out(y))
        return x + self.drop_path(self.mlp(self.norm2(x)))
