"""Masks moved between the grids of a multi-stage (hybrid) tokenizer.

MCMAE (Gao et al. 2022, Sec. 2.2): the mask is drawn on the stage-3 grid and upsampled x2 and
x4 to mask the stage-2 and stage-1 inputs, so a visible stage-3 token covers only visible cells
of the earlier stages. The factors come from the grids, so any grid shape and any stride per
axis (time included) works. ``downsample_mask`` goes the other way for the Table 5 ablation
that masks stage-1 tokens at random. Shapes: B batch, masks are bool with True = masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def stage_grids(spatial: tuple[int, ...], strides: tuple[tuple[int, ...], ...]) -> list[tuple]:
    """Grid after each stage: stage ``k`` divides the previous size by ``strides[k]`` per axis."""
    grids, size = [], tuple(spatial)
    for stride in strides:
        if any(n % s for n, s in zip(size, stride)):
            raise ValueError(f"size {size} is not divisible by the stage stride {stride}")
        size = tuple(n // s for n, s in zip(size, stride))
        grids.append(size)
    return grids


def _factors(coarse: tuple[int, ...], fine: tuple[int, ...]) -> tuple[int, ...]:
    if len(coarse) != len(fine) or any(f % c for c, f in zip(coarse, fine)):
        raise ValueError(f"grid {list(fine)} is not a whole multiple of grid {list(coarse)}")
    return tuple(f // c for c, f in zip(coarse, fine))


def upsample_mask(mask: torch.Tensor, grid: tuple[int, ...],
                  target: tuple[int, ...]) -> torch.Tensor:
    """mask [B, prod(grid)] (or [B, *grid]) -> [B, *target]: every cell of ``target`` takes the
    flag of the ``grid`` cell that covers it (``target`` a whole multiple of ``grid``)."""
    factors = _factors(tuple(grid), tuple(target))
    out = mask.reshape(mask.shape[0], *grid)  # [B, *grid]
    for axis, factor in enumerate(factors, start=1):
        out = out.repeat_interleave(factor, dim=axis)
    return out  # [B, *target]


def downsample_mask(mask: torch.Tensor, grid: tuple[int, ...],
                    target: tuple[int, ...]) -> torch.Tensor:
    """mask [B, prod(grid)] (or [B, *grid]) -> [B, *target] on a coarser grid: a coarse cell is
    masked only when all the cells it covers are (a partly visible cell stays visible, its masked
    cells zeroed by masked convolution)."""
    factors = _factors(tuple(target), tuple(grid))
    visible = (~mask).reshape(mask.shape[0], 1, *grid).float()  # [B, 1, *grid]
    pool = F.max_pool2d if len(grid) == 2 else F.max_pool3d
    return pool(visible, factors, factors)[:, 0] == 0  # [B, *target]

