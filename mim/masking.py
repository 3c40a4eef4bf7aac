"""Mask policies: seeded pure callables ``policy(grid, generator) -> bool[L]`` (True = masked).

Every policy masks the same number of tokens for every sample of a grid (static shapes: the
encoder's visible length is fixed, as XLA needs and as the long-sequence MAE paper generates
masks in the data loader). ``check(grid)`` raises ``MaskConfigError`` for a grid the policy
cannot serve, so a bad config fails before training starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from einops import rearrange, repeat

from mim.registry import MASKS


class MaskConfigError(ValueError):
    """A mask setting that cannot work; the message names the key and what is valid."""


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise MaskConfigError(f"mask.ratio: must be in (0, 1), got {ratio}")


def _num_masked(n: int, ratio: float, what: str) -> int:
    """MAE's count: keep int(n * (1 - ratio)), mask the rest; both sides must be non-empty."""
    keep = int(n * (1.0 - ratio))
    if keep < 1 or keep >= n:
        raise MaskConfigError(
            f"mask.ratio: {ratio} over {n} {what} leaves {keep} visible; "
            f"need at least 1 visible and 1 masked"
        )
    return n - keep


def _random_subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """bool[n] with exactly k True entries, uniformly at random."""
    chosen = torch.randperm(n, generator=generator)[:k]
    out = torch.zeros(n, dtype=torch.bool)
    out[chosen] = True
    return out


@MASKS.register("random")
@dataclass
class RandomMask:
    """MAE: mask a uniformly random ``ratio`` of the tokens (per sample)."""

    ratio: float = 0.75

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)

    def check(self, grid: tuple[int, ...]) -> None:
        _num_masked(math.prod(grid), self.ratio, "tokens")

    def num_masked(self, grid: tuple[int, ...]) -> int:
        return _num_masked(math.prod(grid), self.ratio, "tokens")

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return _random_subset(math.prod(grid), self.num_masked(grid), generator)


@MASKS.register("block")
@dataclass
class BlockMask:
    """Long-sequence MAE: mask units of ``unit`` patches together (e.g. 2x2 at L=784).

    ``unit`` applies to the trailing grid axes; missing leading axes get 1 (a 2x2 unit on a
    (t, h, w) grid is 1x2x2). Each grid axis must be divisible by its unit.
    """

    ratio: float = 0.75
    unit: list[int] = field(default_factory=lambda: [2, 2])

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        if not self.unit or any(int(u) < 1 for u in self.unit):
            raise MaskConfigError(f"mask.unit: must be positive integers, got {self.unit}")

    def _unit_for(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        if len(self.unit) > len(grid):
            raise MaskConfigError(f"mask.unit: {list(self.unit)} has more axes than grid {grid}")
        return (1,) * (len(grid) - len(self.unit)) + tuple(int(u) for u in self.unit)

    def check(self, grid: tuple[int, ...]) -> None:
        unit = self._unit_for(grid)
        if any(g % u for g, u in zip(grid, unit)):
            raise MaskConfigError(
                f"mask.unit: {list(unit)} does not divide the token grid {list(grid)}; "
                f"use a unit whose entries divide {list(grid)} or change the input size"
            )
        _num_masked(math.prod(g // u for g, u in zip(grid, unit)), self.ratio, "mask units")

    def num_masked(self, grid: tuple[int, ...]) -> int:
        self.check(grid)
        unit = self._unit_for(grid)
        coarse = math.prod(g // u for g, u in zip(grid, unit))
        return _num_masked(coarse, self.ratio, "mask units") * math.prod(unit)

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        self.check(grid)
        unit = self._unit_for(grid)
        coarse = tuple(g // u for g, u in zip(grid, unit))
        units = _random_subset(math.prod(coarse), _num_masked(math.prod(coarse), self.ratio,
                                                               "mask units"), generator)
        units = units.reshape(coarse)
        # repeat every unit over its patches, then flatten in grid order
        if len(grid) == 2:
            full = repeat(units, "h w -> (h uh) (w uw)", uh=unit[0], uw=unit[1])
        else:
            full = repeat(units, "t h w -> (t ut) (h uh) (w uw)", ut=unit[0], uh=unit[1],
                          uw=unit[2])
        return rearrange(full, "... -> (...)")  # [L]


def build_mask(name: str, **params) -> object:
    """Construct a registered policy, naming unknown parameters with the valid ones."""
    cls = MASKS.get(name)
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise MaskConfigError(
            f"mask.{unknown[0]}: not a parameter of mask '{name}'; valid: {', '.join(fields)}"
        )
    return cls(**params)
