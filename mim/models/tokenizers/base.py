"""The tokenizer contract every tokenizer (patch2d, cube, hybrid) implements.

A tokenizer owns every size: the grid of tokens for an input, the patch size, and the number of
values per patch. Nothing else in mim hard-codes them. Shape legend: B batch, C channels,
L tokens on the full grid, Lv visible tokens, D width, P values per patch.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from torch import nn


@dataclass
class Tokens:
    """What ``Tokenizer.tokenize`` hands the encoder."""

    visible: torch.Tensor  # [B, Lv, D]
    ids_keep: torch.Tensor | None  # [B, Lv] grid positions of ``visible``; None: all L in order
    skip: torch.Tensor | None = None  # [B, Lv, D] added before the decoder (MCMAE Eq. 1)
    stages: tuple[torch.Tensor, ...] = ()  # earlier feature maps [B, C_k, *grid_k], finest first


class Tokenizer(nn.Module, ABC):
    """Built by the factory as ``cls(in_chans=, embed_dim=, patch_size=, tubelet_size=,
    drop_path=, **params)``: the model's shared sizes and stochastic-depth rate (a tokenizer
    ignores those it has no use for), and its own parameters, the fields of ``Config``
    (``model.tokenizer.<field>``)."""

    # the tokenizer's own parameters: a dataclass (types and its own checks, as a backend's
    # ``Config``); None: it has none
    Config: ClassVar[type | None] = None

    @classmethod
    def check_config(cls, config: Any, model: Any) -> None:
        """Checks of ``config`` (a ``Config``) against the model's settings (``model``: the
        ``ModelConfig``), before any weight exists: ValueError naming the key."""

    # grid axes before the spatial ones whose tokens share the spatial position table (band or
    # group axes: ``group2d``, ``channel2d``); their identity comes from the tokenizer's own
    # embedding. The model computes its table on ``grid[leading_axes:]`` and repeats it.
    leading_axes: ClassVar[int] = 0
    # True when ``patchify`` pads some tokens' values with zeros (groups of unequal band counts):
    # the loss weights target entries by ``patchify(ones_like(x))``, so padding is never scored
    pads_targets: ClassVar[bool] = False

    in_chans: int
    embed_dim: int
    patch_size: tuple[int, ...]  # one entry per spatial grid axis (after the leading axes)

    @property
    def rank(self) -> int:
        """Number of spatial grid axes (2 for images, 3 for space-time and volumes); the grid has
        ``leading_axes`` more."""
        return len(self.patch_size)

    @property
    def patch_dim(self) -> int:
        """P: values per patch in ``patchify``'s output."""
        return math.prod(self.patch_size) * self.in_chans

    def grid(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Token grid for one sample of shape ``(C, *spatial)`` (no batch axis)."""
        spatial = tuple(input_shape)[1:]
        if len(input_shape) != self.rank + 1 or input_shape[0] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects samples of shape (C={self.in_chans}, "
                f"{self.rank} spatial axes), got {tuple(input_shape)}"
            )
        bad = [(s, p) for s, p in zip(spatial, self.patch_size) if s % p]
        if bad:
            raise ValueError(
                f"input size {spatial} is not divisible by the patch size {self.patch_size}"
            )
        return tuple(s // p for s, p in zip(spatial, self.patch_size))

    def mask_grid(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The grid mask policies draw on: the token grid (a hybrid tokenizer may mask its
        input cells instead)."""
        return self.grid(input_shape)

    def hidden(self, mask: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
        """mask [B, prod(mask_grid)] -> bool, True where a value of ``patchify``'s [B, L, P]
        layout is hidden from the encoder: here whole patches, [B, L, 1]."""
        return mask.unsqueeze(-1)

    def num_tokens(self, input_shape: tuple[int, ...]) -> int:
        """L for one sample of shape ``(C, *spatial)``."""
        return math.prod(self.grid(input_shape))

    @property
    def pyramid_pool(self) -> tuple[int, ...]:
        """Max-pool kernel that turns the token grid into the coarsest pyramid level (MCMAE
        Sec. 2.3: 2x2 over space; a leading time axis is kept)."""
        return (1,) * (self.rank - 2) + (2, 2)

    def tokenize(self, x: torch.Tensor, mask: torch.Tensor | None) -> Tokens:
        """``forward`` plus where its tokens sit; multi-scale tokenizers override it to add
        their skip features and stage maps."""
        return Tokens(self(x, mask), visible_ids(mask) if mask is not None else None)

    @abstractmethod
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, C, *spatial], mask bool [B, L] (True = masked) or None -> tokens [B, Lv, D]."""

    @abstractmethod
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *spatial] -> [B, L, P] (the reconstruction target layout)."""

    @abstractmethod
    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """y [B, L, P] on ``grid`` -> x [B, C, *spatial]."""


def visible_ids(mask: torch.Tensor) -> torch.Tensor:
    """mask bool [B, L] with the same count per row -> ids of visible tokens [B, Lv], in order.

    ``nonzero`` lists the visible (False) positions row by row in grid order: no sort, and its
    size is the step's one read of the mask on the host (Lv is data; the shapes need it).
    """
    return torch.nonzero(~mask)[:, 1].view(mask.shape[0], -1)  # [B * Lv] (row, col) -> [B, Lv]


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens [B, L, D], ids [B, Lk] -> [B, Lk, D]."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@runtime_checkable
class SelectsBands(Protocol):
    """A tokenizer whose encoder takes any subset of the bands it was trained on (channel2d,
    spectral2d): ``select_bands(ids)``, the run's band indices the next inputs hold."""

    def select_bands(self, ids: Sequence[int] | None) -> None: ...
