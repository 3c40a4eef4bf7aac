"""Mask policies: seeded pure callables ``policy(grid, generator) -> bool[L]`` (True = masked).

Every policy masks the same number of tokens for every sample of a grid (static shapes: the
encoder's visible length is fixed, as XLA needs and as the long-sequence MAE paper generates
masks in the data loader). ``check(grid)`` raises ``MaskConfigError`` for a grid the policy
cannot serve, so a bad config fails before training starts. ``MaskPolicy`` is the contract;
``DecoderMasking`` adds the part of the masked tokens the decoder reconstructs (``running_cell``).
``time_freq`` masks whole rows and columns of a 2D (time, frequency) grid (AudioMAE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from mim.registry import MASKS


class MaskConfigError(ValueError):
    """A mask setting that cannot work; the message names the key and what is valid."""


@runtime_checkable
class MaskPolicy(Protocol):
    """What the data pipeline and validation ask of a mask policy (a registered dataclass whose
    fields are ``mask.<field>``)."""

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """bool[L] over ``grid`` (True = masked), the same count for every draw."""

    def check(self, grid: tuple[int, ...]) -> None:
        """MaskConfigError naming the key when the policy cannot serve ``grid``."""

    def num_masked(self, grid: tuple[int, ...]) -> int:
        """The masked tokens of every draw on ``grid``."""


@runtime_checkable
class DecoderMasking(MaskPolicy, Protocol):
    """A policy whose decoder reconstructs and scores only part of the masked tokens."""

    def num_targets(self, grid: tuple[int, ...]) -> int:
        """The masked tokens the decoder scores on ``grid``."""

    def targets(self, grid: tuple[int, ...], generator: torch.Generator,
                mask: torch.Tensor) -> torch.Tensor:
        """bool[L]: those tokens, for the draw ``mask``."""


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
    """MAE: mask a uniformly random ``ratio`` of the tokens (per sample).

    On a grid with a leading band or group axis (``(G, h, w)``: ``group2d``, ``channel2d``)
    ``groups=consistent`` draws one spatial mask and repeats it along axis 0 (SatMAE's
    consistent masking), and ``band_dropout`` hides each index of axis 0 whole with that
    probability (Prithvi-EO-2.0 drops whole bands), the rest of the count drawn elsewhere.
    """

    ratio: float = 0.75  # fraction of the tokens masked
    # independent | consistent: the same spatial mask on every index of grid axis 0 (the band
    # or group axis; SatMAE's consistent masking)
    groups: str = "independent"
    # chance that an index of grid axis 0 (a band or group) is masked whole; the rest of the
    # count is drawn at random elsewhere (Prithvi-EO-2.0); 0: off
    band_dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        if self.groups not in GROUPINGS:
            raise MaskConfigError(f"mask.groups: '{self.groups}' is not one of: "
                                  f"{', '.join(GROUPINGS)}")
        if not 0.0 <= self.band_dropout < 1.0:
            raise MaskConfigError(f"mask.band_dropout: must be in [0, 1), got {self.band_dropout}")
        if self.band_dropout and self.groups == "consistent":
            raise MaskConfigError("mask.band_dropout: not with mask.groups=consistent (a dropped "
                                  "band breaks the repeated spatial mask); set one of them")

    def check(self, grid: tuple[int, ...]) -> None:
        self.num_masked(grid)

    def num_masked(self, grid: tuple[int, ...]) -> int:
        if self.groups == "consistent":
            self._check_leading(grid, "groups=consistent")
            return _num_masked(math.prod(grid[1:]), self.ratio, "spatial tokens") * grid[0]
        if self.band_dropout:
            self._check_leading(grid, f"band_dropout={self.band_dropout}")
        return _num_masked(math.prod(grid), self.ratio, "tokens")

    def _check_leading(self, grid: tuple[int, ...], setting: str) -> None:
        if len(grid) < 3:
            key = setting.split("=")[0]
            raise MaskConfigError(
                f"mask.{key}: {setting} needs a grid with a leading band or group axis (3 axes, "
                f"e.g. model.tokenizer.name=group2d or channel2d), got {list(grid)}; remove "
                f"mask.{key}")

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        count = self.num_masked(grid)
        if self.groups == "consistent":
            plane = _random_subset(math.prod(grid[1:]), count // grid[0], generator)  # [h * w]
            return repeat(plane, "s -> (g s)", g=grid[0])  # [G * h * w]
        if self.band_dropout:
            return _band_dropout(grid, count, self.band_dropout, generator)
        return _random_subset(math.prod(grid), count, generator)


GROUPINGS = ("independent", "consistent")  # RandomMask.groups


def _band_dropout(grid: tuple[int, ...], count: int, p: float,
                  generator: torch.Generator) -> torch.Tensor:
    """bool[L] with exactly ``count`` True: each index of grid axis 0 hidden whole with chance
    ``p`` (at most ``count // plane`` of them, the lowest draws kept), the rest of the count
    uniformly among the other tokens."""
    bands, plane = grid[0], math.prod(grid[1:])
    draws = torch.rand(bands, generator=generator)  # [G]
    cap = min(int((draws < p).sum()), count // plane)
    dropped = torch.zeros(bands, dtype=torch.bool)
    dropped[torch.argsort(draws)[:cap]] = True  # the lowest draws are the ones under p
    mask = repeat(dropped, "g -> g s", s=plane).clone()  # [G, h * w]
    rest = (~mask).reshape(-1).nonzero().squeeze(1)  # [L - cap * plane] tokens still free
    chosen = rest[torch.randperm(rest.numel(), generator=generator)[: count - cap * plane]]
    mask = mask.reshape(-1)  # [G * h * w]
    mask[chosen] = True
    return mask


@MASKS.register("block")
@dataclass
class BlockMask:
    """Long-sequence MAE: mask units of ``unit`` patches together (e.g. 2x2 at L=784).

    ``unit`` applies to the trailing grid axes; missing leading axes get 1 (a 2x2 unit on a
    (t, h, w) grid is 1x2x2). Each grid axis must be divisible by its unit.
    """

    ratio: float = 0.75  # fraction of the tokens masked
    # tokens masked together, per trailing grid axis
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


@MASKS.register("time_freq")
@dataclass
class TimeFreqMask:
    """AudioMAE's fine-tuning masking (Huang et al. 2022, arXiv 2207.06405; ``mask_2d``):
    SpecAugment (Park et al. 2019) on the patch grid of a spectrogram. Whole rows and whole
    columns of the 2D token grid ``(time, frequency)`` are masked: grid axis 0 is time (frames),
    axis 1 frequency (mel bins). ``time_ratio`` of the rows and ``freq_ratio`` of the columns
    are drawn at random, and a token is masked where its row or its column is.

    Each axis keeps ``int(n * (1 - ratio))`` of its ``n`` entries (MAE's count, as AudioMAE's
    ``random_masking_2d`` draws it), so a draw on ``(H, W)`` masks exactly
    ``H * W - (H - t) * (W - f)`` tokens for ``t`` rows and ``f`` columns: the same for every
    sample (static shapes). AudioMAE pretrains with unstructured masking (``mask=random``, ratio
    0.8); this policy is its fine-tuning masking (time 0.2, frequency 0.2 in its AudioSet
    script).
    """

    time_ratio: float = 0.2  # fraction of the time steps (grid axis 0: whole rows) masked
    freq_ratio: float = 0.2  # fraction of the frequency bins (grid axis 1: whole columns) masked

    def __post_init__(self) -> None:
        for key in ("time_ratio", "freq_ratio"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise MaskConfigError(f"mask.{key}: must be in [0, 1), got {value}")

    def _counts(self, grid: tuple[int, ...]) -> tuple[int, int]:
        """(masked rows, masked columns) on ``grid``; MaskConfigError where it cannot serve."""
        if len(grid) != 2:
            raise MaskConfigError(
                f"mask: time_freq masks rows (time) and columns (frequency) of a 2D token grid "
                f"(time, frequency), got {list(grid)}; use mask=random or mask=block")
        counts = []
        for n, key, what in ((grid[0], "time_ratio", "time steps"),
                             (grid[1], "freq_ratio", "frequency bins")):
            ratio = getattr(self, key)
            keep = int(n * (1.0 - ratio))
            if keep < 1:
                raise MaskConfigError(
                    f"mask.{key}: {ratio} of the {n} {what} of the token grid {list(grid)} "
                    f"leaves none visible; need at least 1 visible")
            counts.append(n - keep)
        if not any(counts):
            raise MaskConfigError(
                f"mask.time_ratio: time_ratio={self.time_ratio} and freq_ratio="
                f"{self.freq_ratio} on the token grid {list(grid)} mask no token; raise one "
                f"of them")
        return counts[0], counts[1]

    def check(self, grid: tuple[int, ...]) -> None:
        self._counts(grid)

    def num_masked(self, grid: tuple[int, ...]) -> int:
        t, f = self._counts(grid)
        h, w = grid
        return h * w - (h - t) * (w - f)

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        t, f = self._counts(grid)
        rows = _random_subset(grid[0], t, generator)  # [H] masked time steps
        cols = _random_subset(grid[1], f, generator)  # [W] masked frequency bins
        return (rows[:, None] | cols[None, :]).reshape(-1)  # [H, W] -> [L]


def build_mask(name: str, **params) -> MaskPolicy:
    """Construct a registered policy, naming unknown parameters with the valid ones."""
    cls = MASKS.get(name)
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise MaskConfigError(
            f"mask.{unknown[0]}: not a parameter of mask '{name}'; valid: {', '.join(fields)}"
        )
    return cls(**params)


@MASKS.register("tube")
@dataclass
class TubeMask:
    """Tong et al. 2022: draw ``inner`` on the grid without its leading (time) axis and repeat
    it along that axis, so a masked patch stays masked in every step (default ratio 0.9).

    ``inner`` is ``random`` or ``block`` (with ``unit`` on the remaining axes).
    """

    ratio: float = 0.9  # fraction of the tokens masked
    inner: str = "random"  # random | block: the policy drawn on each time step's plane
    # tokens masked together, per trailing grid axis
    unit: list[int] = field(default_factory=lambda: [2, 2])

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        if self.inner not in ("random", "block"):
            raise MaskConfigError(f"mask.inner: '{self.inner}' is not one of: random, block")
        params = {"ratio": self.ratio, **({"unit": list(self.unit)} if self.inner == "block"
                                          else {})}
        self._inner = build_mask(self.inner, **params)

    def check(self, grid: tuple[int, ...]) -> None:
        if len(grid) < 3:
            raise MaskConfigError(
                f"mask: tube needs a grid with a leading time axis (3 axes), got {list(grid)}; "
                "use mask=random or mask=block")
        self._inner.check(grid[1:])

    def num_masked(self, grid: tuple[int, ...]) -> int:
        self.check(grid)
        return self._inner.num_masked(grid[1:]) * grid[0]

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        self.check(grid)
        plane = self._inner(grid[1:], generator)  # [h * w]
        return repeat(plane, "s -> (t s)", t=grid[0])  # [t * h * w]


@MASKS.register("running_cell")
@dataclass
class RunningCellMask:
    """Decoder masking (Wang et al. 2023, VideoMAE v2): the encoder mask comes from ``encoder``
    (``tube`` by default, at ``ratio``); the decoder then reconstructs only part of the masked
    tokens, and the loss is taken on that part.

    The part is chosen by a running cell: the last two grid axes are tiled into ``cell`` cells;
    in step ``t`` of the leading axis a token at cell offset ``i`` is preferred when
    ``(i + t) mod |cell|`` falls in the kept fraction, so the preferred offsets move from step
    to step. To keep shapes static, exactly ``round(masked x (1 - decoder_ratio))`` masked
    tokens are taken, preferred ones first (random order within each preference class).
    """

    ratio: float = 0.9  # fraction of the tokens masked
    encoder: str = "tube"  # the policy drawing the encoder's mask (at ratio)
    decoder_ratio: float = 0.5  # fraction of the masked tokens the decoder does not reconstruct
    # the running cell over the last two grid axes
    cell: list[int] = field(default_factory=lambda: [2, 2])

    def __post_init__(self) -> None:
        if self.encoder == "running_cell":
            raise MaskConfigError("mask.encoder: cannot be running_cell itself")
        self._encoder = build_mask(self.encoder, ratio=self.ratio)
        if not 0.0 <= self.decoder_ratio < 1.0:
            raise MaskConfigError(f"mask.decoder_ratio: must be in [0, 1), got {self.decoder_ratio}")
        if len(self.cell) != 2 or min(self.cell) < 1:
            raise MaskConfigError(f"mask.cell: two positive integers expected, got {self.cell}")

    def check(self, grid: tuple[int, ...]) -> None:
        self._encoder.check(grid)
        if self.num_targets(grid) < 1:
            raise MaskConfigError(f"mask.decoder_ratio: {self.decoder_ratio} leaves no token to "
                                  "reconstruct")

    def num_masked(self, grid: tuple[int, ...]) -> int:
        return self._encoder.num_masked(grid)

    def num_targets(self, grid: tuple[int, ...]) -> int:
        return round(self._encoder.num_masked(grid) * (1.0 - self.decoder_ratio))

    def __call__(self, grid: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return self._encoder(grid, generator)

    def targets(self, grid: tuple[int, ...], generator: torch.Generator,
                mask: torch.Tensor) -> torch.Tensor:
        """bool[L]: the masked tokens the decoder reconstructs (exactly ``num_targets``)."""
        lead = math.prod(grid[:-2])
        h, w = grid[-2:]
        ch, cw = self.cell
        size = ch * cw
        kept = size - round(size * self.decoder_ratio)
        t = torch.arange(lead).view(-1, 1, 1)
        offset = (torch.arange(h).view(1, -1, 1) % ch) * cw + torch.arange(w).view(1, 1, -1) % cw
        preferred = ((offset + t) % size < kept).reshape(-1)  # [L]
        # sort key: masked-and-preferred first, then masked, then visible; random within each
        rank = (~mask).float() * 4 + (~preferred).float() * 2 + torch.rand(mask.numel(),
                                                                          generator=generator)
        chosen = torch.argsort(rank)[: self.num_targets(grid)]
        out = torch.zeros_like(mask)
        out[chosen] = True
        return out


def decoder_targets(policy: MaskPolicy, grid: tuple[int, ...]) -> int | None:
    """The masked tokens the decoder reconstructs and scores under ``policy`` on ``grid``:
    decoder masking's part (``running_cell``), None where it is every masked token."""
    return policy.num_targets(grid) if isinstance(policy, DecoderMasking) else None


# -- no data (rasters with data.nodata: NaN in a sample) -----------------------------------------
# a patch is data where more than this share of its values are; one mostly of no data is masked
# first (the encoder never sees it) and never scored (the loss, mim/models/model.py; Clay's
# handling of nodata)
MIN_VALID = 0.5


def nodata_cells(x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor | None:
    """x [C, *spatial] with NaN for no data -> bool [L]: the tokens of ``grid`` mostly of no
    data (a leading band or group axis of the grid shares its spatial cell's answer); None
    where the grid's trailing axes do not tile ``spatial``."""
    spatial = tuple(x.shape[1:])
    cells = tuple(grid[-len(spatial):])
    if len(grid) < len(spatial) or any(s % c for s, c in zip(spatial, cells)):
        return None
    missing = torch.isnan(x).any(dim=0).float()[None, None]  # [1, 1, *spatial]
    kernel = tuple(s // c for s, c in zip(spatial, cells))
    pool = F.avg_pool2d if len(spatial) == 2 else F.avg_pool3d
    mostly = pool(missing, kernel, kernel)[0, 0] > 1 - MIN_VALID  # [*cells]
    return mostly.expand(*grid).reshape(-1)  # [*grid] -> [L]


def nodata_first(mask: torch.Tensor, mostly: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """mask bool [L] with the tokens ``mostly`` of no data masked first, the count unchanged
    (static shapes): the rest of the count drawn from the policy's own masked tokens."""
    count = int(mask.sum())
    forced = mostly.nonzero().view(-1)  # [n]
    if len(forced) >= count:  # more no data than the count: a seeded choice among it
        keep = forced[torch.randperm(len(forced), generator=generator)[:count]]
    else:
        others = (mask & ~mostly).nonzero().view(-1)  # at least count - n of them
        chosen = others[torch.randperm(len(others), generator=generator)[:count - len(forced)]]
        keep = torch.cat([forced, chosen])
    out = torch.zeros_like(mask)
    out[keep] = True
    return out
