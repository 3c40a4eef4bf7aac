"""Fixed sin-cos position embeddings on 2D and 3D grids, and their interpolation.

Layout follows MAE (``get_2d_sincos_pos_embed``): for a 2D grid (h, w) the first half of the
channels encodes the *column* (w) index and the second half the *row* (h) index (Hugging Face's
ViTMAE notes this swap); keeping it means converted MAE weights see the positions they were
trained with. A 3D grid (t, h, w) puts the time channels first, then MAE's 2D layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions [N] -> [N, dim]: sin on the first half, cos on the second (MAE Eq. in code)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # [N, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _axis_widths(dim: int, rank: int) -> list[int]:
    """Even widths, one per axis, summing to dim; the leading (time) axis takes the remainder."""
    base = (dim // rank) // 2 * 2
    first = dim - base * (rank - 1)
    if base == 0 or first % 2:
        raise ValueError(f"width {dim} cannot be split into {rank} even sin-cos parts")
    return [first] + [base] * (rank - 1)


def sincos_pos_embed(dim: int, grid: tuple[int, ...], num_prefix: int = 0) -> torch.Tensor:
    """Fixed embedding for ``grid`` (2 or 3 axes) -> [num_prefix + L, dim] (prefix rows are 0)."""
    if len(grid) not in (2, 3):
        raise ValueError(f"grid must have 2 or 3 axes, got {grid}")
    coords = torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij")  # each [*grid]
    # channel order: leading axes (time), then w, then h (MAE's 2D order)
    order = list(range(len(grid) - 2)) + [len(grid) - 1, len(grid) - 2]
    widths = _axis_widths(dim, len(grid))
    parts = [sincos_1d(w, coords[a].reshape(-1)) for w, a in zip(widths, order)]  # each [L, w]
    emb = torch.cat(parts, dim=1).float()  # [L, dim]
    return torch.cat([torch.zeros(num_prefix, dim), emb], dim=0)


def interpolate_pos_embed(
    pos: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...], num_prefix: int = 0
) -> torch.Tensor:
    """Resize a (learned or converted) table [num_prefix + L_old, D] to ``new_grid``.

    Bicubic in 2D (as MAE's ``interpolate_pos_embed`` and the long-sequence MAE paper's transfer),
    trilinear in 3D (space and time). Prefix rows (cls token) are kept unchanged.
    """
    if len(old_grid) != len(new_grid):
        raise ValueError(f"cannot interpolate a {len(old_grid)}D grid to {len(new_grid)}D")
    prefix, table = pos[:num_prefix], pos[num_prefix:]
    if table.shape[0] != torch.Size(old_grid).numel():
        raise ValueError(f"table has {table.shape[0]} rows, grid {old_grid} needs "
                         f"{torch.Size(old_grid).numel()}")
    dim = table.shape[1]
    volume = table.reshape(1, *old_grid, dim).movedim(-1, 1)  # [1, D, *old_grid]
    mode = "bicubic" if len(old_grid) == 2 else "trilinear"
    resized = F.interpolate(volume.float(), size=tuple(new_grid), mode=mode, align_corners=False)
    resized = resized.movedim(1, -1).reshape(-1, dim).to(pos.dtype)  # [L_new, D]
    return torch.cat([prefix, resized], dim=0)


def separable_sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Space + time (Feichtenhofer et al. 2022, MAE-ST): a 2D table over the last two axes plus a
    1D table over the leading axis, each of the full width, summed -> [L, dim]. A 2D grid gets
    the plain 2D table."""
    if len(grid) == 2:
        return sincos_pos_embed(dim, grid)
    if len(grid) != 3:
        raise ValueError(f"grid must have 2 or 3 axes, got {grid}")
    space = sincos_pos_embed(dim, grid[1:])  # [h * w, dim]
    time = sincos_1d(dim, torch.arange(grid[0])).float()  # [t, dim]
    return (time[:, None, :] + space[None, :, :]).reshape(-1, dim)  # [t * h * w, dim]


def flat_sincos_pos_embed(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """The Transformer's 1D table over the flattened token index (Vaswani et al. 2017), as Tong
    et al. 2022 use it on space-time grids: channel 2i is sin(n / 10000^(2i/dim)), channel 2i+1
    the matching cos (interleaved, not halves) -> [L, dim]. Converted weights of that layout
    need it."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    positions = torch.arange(math.prod(grid), dtype=torch.float64)  # [L]
    omega = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [dim/2]
    angles = positions[:, None] * omega[None, :]  # [L, dim/2]
    table = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # [L, dim/2, 2]
    return table.reshape(len(positions), dim).float()  # 'l i two -> l (i two)'


POS_EMBEDS = {"joint": sincos_pos_embed, "separable": separable_sincos_pos_embed,
              "flat": flat_sincos_pos_embed}


class LearnedPosEmbed(nn.Module):
    """A learned table [L, D] on ``grid`` (ViT / timm layout), resized on use to any other grid
    of the same rank (bicubic in 2D, trilinear in 3D: transfer to other sizes and frame counts).
    """

    def __init__(self, dim: int, grid: tuple[int, ...]):
        super().__init__()
        self.grid = tuple(int(n) for n in grid)
        self.table = nn.Parameter(torch.zeros(math.prod(self.grid), dim))  # [L, D]
        nn.init.trunc_normal_(self.table, std=0.02)  # timm's ViT initialisation

    def forward(self, grid: tuple[int, ...]) -> torch.Tensor:
        if tuple(grid) == self.grid:
            return self.table
        return interpolate_pos_embed(self.table, self.grid, tuple(grid))  # [L_new, D]

    def extra_repr(self) -> str:
        return f"grid={self.grid}, dim={self.table.shape[1]}"
