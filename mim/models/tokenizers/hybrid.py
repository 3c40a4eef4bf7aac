"""Hybrid conv tokenizers (MCMAE / ConvMAE, Gao et al. 2022): ``hybrid2d`` and ``hybrid3d``.

Stage 1: a kernel == stride conv (stride 4 at patch 16) and L1 masked conv blocks of width C1;
stage 2: a stride-2 conv and L2 blocks of width C2; stage 3 embedding: a stride-2 conv to the
encoder width. The ViT blocks of ``MaskedAutoencoder`` are stage 3 (Sec. 2.2, Table 7). So the
tokenizer's ``patch_size`` (the total stride per axis) is the product of the stage strides, and
the grid is the stage-3 grid: masks are drawn there by any policy and upsampled for stages 1-2
(``stage_masks.upsample_mask``). Only visible stage-3 tokens leave the tokenizer, so the
transformer stage costs what MAE's encoder costs.

In 3D (video, Sec. 2.4) stage 1 embeds cubes: its stride along the leading axis is the whole
``tubelet_size`` unless ``time_strides`` spreads it over the stages (volumes: 4, 2, 2 as in space).

Multi-scale decoder (Eq. 1): stage-1 and stage-2 features go through stride convs to the stage-3
grid and are returned as ``Tokens.skip``; the model adds them to the encoded tokens before its
decoder embedding (the Linear of Eq. 1). ``Tokens.stages`` holds the stage-1/2 maps (strides 4
and 8) for feature-pyramid heads (``MaskedAutoencoder.pyramid``).

``mask_level="input"`` is Table 5's ablation (``model.tokenizer.mask_level=input``): the mask lives
on the stage-1 grid (MAE-style random masking of input tokens; ``mask_grid``, where the data
pipeline draws it), stage 2 sees a cell while any of its stage-1 cells is visible, and stage 3
keeps every token (1.7x the FLOPs of block masking at MCMAE-B / 224). Every stage-3 patch is then
partly visible, so the loss is on all of them (``model.loss_on=all``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mim.registry import TOKENIZERS
from mim.models.tokenizers.base import Tokenizer, Tokens, gather_tokens, visible_ids
from mim.models.tokenizers.masked_conv import ConvBlock, zero_masked
from mim.models.tokenizers.patch import _AXES, _patterns
from mim.models.tokenizers.stage_masks import downsample_mask, stage_grids, upsample_mask

MASK_LEVELS = ("stage3", "input")


@dataclass
class HybridConfig:
    """The parameters of ``hybrid2d`` and ``hybrid3d`` (``model.tokenizer.<field>``): conv
    stages 1-2 before the ViT (stage 3: the model's embed_dim, depth and mlp_ratio), MCMAE
    Table 7; the model's patch_size is the total stride (stages: patch/4, 2, 2)."""

    dims: list[int] = field(default_factory=lambda: [256, 384])  # conv widths [C1, C2]
    depths: list[int] = field(default_factory=lambda: [2, 2])  # conv blocks [L1, L2]
    mlp_ratios: list[float] = field(default_factory=lambda: [4.0, 4.0])  # MLP ratios
    kernel: int = 5  # depthwise kernel (Table 5 also tries 7 and 9)
    time_kernel: int = 5  # its extent along the leading axis of 3D grids
    time_strides: list[int] = field(default_factory=list)  # per stage; [] = [tubelet, 1, 1]
    multiscale: bool = True  # the multi-scale decoder (Eq. 1)
    # stage3 (MCMAE: block-wise, drawn on the stage-3 grid) | input (Table 5's ablation: the
    # mask policy draws on the stage-1 grid and stage 3 keeps every token; needs loss_on=all)
    mask_level: str = "stage3"

    def __post_init__(self) -> None:
        for key, ok, what in (("dims", lambda v: v >= 1, ">= 1"),
                              ("depths", lambda v: v >= 0, ">= 0"),
                              ("mlp_ratios", lambda v: v > 0, "> 0")):
            values = list(getattr(self, key))
            if len(values) != 2 or not all(map(ok, values)):
                raise ValueError(f"model.tokenizer.{key}: two values [stage 1, stage 2] {what} "
                                 f"expected, got {values}")
        for key in ("kernel", "time_kernel"):
            if getattr(self, key) < 1 or getattr(self, key) % 2 == 0:
                raise ValueError(f"model.tokenizer.{key}: an odd size >= 1 expected (5, 7 or 9 "
                                 f"in MCMAE Table 5), got {getattr(self, key)}")
        check_mask_level(self.mask_level)


def _cells_pattern(rank: int) -> str:
    """Channels-last map -> one row per coarse cell, values in a Conv weight's (c, *kernel) order:
    'b (h ph) (w pw) c -> b (h w) (c ph pw)'."""
    grid, patch = _AXES[rank]
    spatial = " ".join(f"({g} {p})" for g, p in zip(grid, patch))
    return f"b {spatial} c -> b ({' '.join(grid)}) (c {' '.join(patch)})"


class HybridTokenizer(Tokenizer):
    """Stages 1-2 of MCMAE and the stage-3 embedding, on a 2D or 3D grid.

    ``strides``: three tuples (stages 1, 2, 3), one stride per grid axis.
    """

    Config = HybridConfig

    @classmethod
    def check_config(cls, config: HybridConfig, model: Any) -> None:
        """The parameters against the model's: strides that fit its patch and tubelet sizes,
        and the loss on every token when the mask is drawn on the input cells."""
        spatial_strides(model.patch_size)
        stage_time_strides(config.time_strides, model.tubelet_size)
        if config.mask_level == "input" and model.loss_on != "all":
            raise ValueError("model.loss_on: with model.tokenizer.mask_level=input every "
                             "stage-3 patch is partly visible, so the loss is on all of them: "
                             "set model.loss_on=all")

    def __init__(self, in_chans: int, embed_dim: int, strides: Sequence[Sequence[int]],
                 dims: Sequence[int], depths: Sequence[int], mlp_ratios: Sequence[float],
                 kernel: Sequence[int], multiscale: bool = True, drop_path: float = 0.0,
                 mask_level: str = "stage3"):
        super().__init__()
        self.strides = tuple(tuple(int(s) for s in stage) for stage in strides)
        if len(self.strides) != 3 or len({len(s) for s in self.strides}) != 1 \
                or len(self.strides[0]) not in _AXES:
            raise ValueError(f"strides: three stages of 2 or 3 axes expected, got {strides}")
        check_mask_level(mask_level)
        self.in_chans, self.embed_dim, self.mask_level = in_chans, embed_dim, mask_level
        self.patch_size = tuple(math.prod(axis) for axis in zip(*self.strides))
        self.dims = tuple(int(d) for d in dims)
        s1, s2, s3 = self.strides
        conv = nn.Conv2d if self.rank == 2 else nn.Conv3d
        count = sum(depths)  # drop-path rates rise linearly over the conv blocks
        rates = [drop_path * i / max(count - 1, 1) for i in range(count)]
        self.embed1 = conv(in_chans, self.dims[0], s1, stride=s1)
        self.stage1 = nn.ModuleList(ConvBlock(self.dims[0], mlp_ratios[0], tuple(kernel), r)
                                    for r in rates[: depths[0]])
        self.embed2 = conv(self.dims[0], self.dims[1], s2, stride=s2)
        self.stage2 = nn.ModuleList(ConvBlock(self.dims[1], mlp_ratios[1], tuple(kernel), r)
                                    for r in rates[depths[0]: sum(depths)])
        # stage-3 embedding, named like the patch tokenizers' (MAE initialises it as a linear)
        self.proj = conv(self.dims[1], embed_dim, s3, stride=s3)
        s23 = tuple(a * b for a, b in zip(s2, s3))
        # Eq. 1's StrideConv(E1, 4) and StrideConv(E2, 2); absent without the multi-scale decoder
        self.skip1 = conv(self.dims[0], embed_dim, s23, stride=s23) if multiscale else None
        self.skip2 = conv(self.dims[1], embed_dim, s3, stride=s3) if multiscale else None
        self._target_pattern, _ = _patterns(self.rank)
        self._cells_pattern = _cells_pattern(self.rank)

    # -- sizes --------------------------------------------------------------------------------
    def stage_grids(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Grids of stages 1, 2, 3 for one sample ``(C, *spatial)``; the last is ``grid()``."""
        self.grid(input_shape)  # checks channels and divisibility, naming the input size
        return stage_grids(tuple(input_shape)[1:], self.strides)

    def mask_grid(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The grid the mask is drawn on: stage 3 (MCMAE), or stage 1 for ``mask_level=input``."""
        return self.stage_grids(input_shape)[0 if self.mask_level == "input" else -1]

    def hidden(self, mask: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
        """With ``mask_level=input`` the stage-1 cells: [B, L1] -> [B, L, P] (see the base)."""
        if self.mask_level != "input":
            return super().hidden(mask, input_shape)
        cells = upsample_mask(mask, self.stage_grids(input_shape)[0], tuple(input_shape)[1:])
        pixels = cells.unsqueeze(1).expand(-1, input_shape[0], *cells.shape[1:])  # [B, C, *sp]
        return self.patchify(pixels)  # [B, L, P]

    @property
    def pyramid_pool(self) -> tuple[int, ...]:
        return self.strides[-1]  # stride 32 from 16 the way stage 3 went from 8 to 16

    # -- the stages -----------------------------------------------------------------------------
    def stage_masks(self, mask: torch.Tensor | None,
                    input_shape: tuple[int, ...]) -> list[torch.Tensor | None]:
        """mask [B, prod(mask_grid)] -> masks [B, *grid_k] of stages 1 and 2 (Nones without)."""
        if mask is None:
            return [None, None]
        g1, g2, g3 = self.stage_grids(input_shape)
        if self.mask_level == "input":  # [B, L1] -> [B, *g1], [B, *g2]
            return [mask.reshape(mask.shape[0], *g1), downsample_mask(mask, g1, g2)]
        return [upsample_mask(mask, g3, g1), upsample_mask(mask, g3, g2)]  # [B, *g1], [B, *g2]

    def _cells(self, features: torch.Tensor, conv: nn.Module,
               ids: torch.Tensor | None) -> torch.Tensor:
        """A kernel == stride ``conv`` over channels-last ``features`` [B, *grid, C], evaluated
        only at the coarse cells ``ids`` [B, Lv] (all when None) -> [B, Lv, D]."""
        kernel = dict(zip(_AXES[self.rank][1], conv.kernel_size))
        cells = rearrange(features, self._cells_pattern, **kernel)  # [B, L, C*prod(kernel)]
        if ids is not None:
            cells = gather_tokens(cells, ids)  # [B, Lv, C*prod(kernel)]
        return F.linear(cells, conv.weight.flatten(1), conv.bias)  # [B, Lv, D]

    def tokenize(self, x: torch.Tensor, mask: torch.Tensor | None) -> Tokens:
        """x [B, C, *spatial], mask bool [B, prod(mask_grid)] or None -> visible stage-3 tokens
        [B, Lv, D], their skip features and the stage-1/2 maps."""
        mask1, mask2 = self.stage_masks(mask, x.shape[1:])
        # kernel == stride: a stage-1 cell sees only its own pixels, masked cells are zeroed
        # before anything mixes positions (the blocks' depthwise convs, the stride convs)
        e1 = self.embed1(x).movedim(1, -1)  # [B, *g1, C1]
        for block in self.stage1:
            e1 = block(e1, mask1)
        e1 = zero_masked(e1, mask1)  # before the stride convs of stage 2 and Eq. 1
        e2 = self.embed2(e1.movedim(-1, 1)).movedim(1, -1)  # [B, *g2, C2]
        for block in self.stage2:
            e2 = block(e2, mask2)
        e2 = zero_masked(e2, mask2)
        ids = visible_ids(mask) if mask is not None and self.mask_level == "stage3" else None
        tokens = self._cells(e2, self.proj, ids)  # [B, Lv, D]
        skip = None
        if self.skip1 is not None:
            skip = self._cells(e1, self.skip1, ids) + self._cells(e2, self.skip2, ids)
        return Tokens(tokens, ids, skip, (e1.movedim(-1, 1), e2.movedim(-1, 1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.tokenize(x, mask).visible

    # -- reconstruction target: MAE's layout over the total patch --------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        sizes = dict(zip(_AXES[self.rank][1], self.patch_size))
        return rearrange(x, self._target_pattern, **sizes)  # [B, L, P]

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        grid_names, patch_names = _AXES[self.rank]
        inverse = " -> ".join(reversed(self._target_pattern.split(" -> ")))
        return rearrange(y, inverse, **dict(zip(patch_names, self.patch_size)),
                         **dict(zip(grid_names, grid)))  # [B, C, *spatial]

    def extra_repr(self) -> str:
        return (f"in_chans={self.in_chans}, embed_dim={self.embed_dim}, dims={self.dims}, "
                f"strides={self.strides}, mask_level={self.mask_level}")


def check_mask_level(mask_level: str) -> None:
    """ValueError naming ``model.tokenizer.mask_level`` unless it is one of ``MASK_LEVELS``."""
    if mask_level not in MASK_LEVELS:
        raise ValueError(f"model.tokenizer.mask_level: '{mask_level}' is not one of: "
                         f"{', '.join(MASK_LEVELS)}")


def spatial_strides(patch_size: int) -> tuple[int, int, int]:
    """MCMAE's 4, 2, 2 at patch 16: stages 2 and 3 each halve, stage 1 takes the rest."""
    if patch_size % 4:
        raise ValueError(f"model.patch_size: hybrid tokenizers need a multiple of 4 (stage strides "
                         f"patch/4, 2, 2), got {patch_size}")
    return patch_size // 4, 2, 2


def stage_time_strides(strides: Sequence[int], tubelet_size: int) -> tuple[int, int, int]:
    """Per-stage strides along the leading axis of 3D grids: ``strides``, or () for
    (tubelet, 1, 1); ValueError naming ``model.tokenizer.time_strides`` unless three strides >= 1
    whose product is the tubelet size."""
    time = tuple(int(s) for s in strides) or (tubelet_size, 1, 1)
    if len(time) != 3 or min(time) < 1 or math.prod(time) != tubelet_size:
        raise ValueError(f"model.tokenizer.time_strides: [] or three strides >= 1 whose product is "
                         f"model.tubelet_size={tubelet_size}, got {list(strides)}")
    return time


@TOKENIZERS.register("hybrid2d")
class Hybrid2dTokenizer(HybridTokenizer):
    """MCMAE on images: strides (patch/4, 2, 2) per axis, ``kernel`` x ``kernel`` depthwise.
    ``tubelet_size`` and ``time_*`` are accepted for one config schema and unused (no time axis)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16, tubelet_size: int = 1,
                 dims: Sequence[int] = (256, 384), depths: Sequence[int] = (2, 2),
                 mlp_ratios: Sequence[float] = (4.0, 4.0), kernel: int = 5,
                 time_kernel: int = 5, time_strides: Sequence[int] = (),
                 multiscale: bool = True, drop_path: float = 0.0, mask_level: str = "stage3"):
        strides = [(s, s) for s in spatial_strides(patch_size)]
        super().__init__(in_chans, embed_dim, strides, dims, depths, mlp_ratios, (kernel, kernel),
                         multiscale, drop_path, mask_level)


@TOKENIZERS.register("hybrid3d")
class Hybrid3dTokenizer(HybridTokenizer):
    """MCMAE on (t, h, w) grids: cube embedding at stage 1 (``tubelet_size`` along the leading
    axis unless ``time_strides`` gives one stride per stage), masked ``time_kernel`` x ``kernel``
    x ``kernel`` depthwise convs."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16, tubelet_size: int = 2,
                 dims: Sequence[int] = (256, 384), depths: Sequence[int] = (2, 2),
                 mlp_ratios: Sequence[float] = (4.0, 4.0), kernel: int = 5,
                 time_kernel: int = 5, time_strides: Sequence[int] = (),
                 multiscale: bool = True, drop_path: float = 0.0, mask_level: str = "stage3"):
        time = stage_time_strides(time_strides, tubelet_size)
        strides = [(t, s, s) for t, s in zip(time, spatial_strides(patch_size))]
        super().__init__(in_chans, embed_dim, strides, dims, depths, mlp_ratios,
                         (time_kernel, kernel, kernel), multiscale, drop_path, mask_level)
