"""Progressive resolution (``data.resolution_schedule``): low input sizes early, the full one last.

DailyMAE (Wu et al. 2024) and FFCV's ImageNet recipes pretrain at a lower resolution for most
of the run and at the full one at the end; a step at a lower size costs fewer tokens. A
modality that supports it lists the sample shapes of the stages (``ModalitySpec.resolutions``);
the stages have equal lengths over the run's optimiser steps, the last at the full size (the
one pictures and evaluation use).

The size of an item is a pure function of its position in the source's global order
(``Stages.__call__``): a position maps to the optimiser step that consumes it, the step to its
stage. Every item of one step has the same size, loader workers need no shared state, and a
resume (or another process count at the same effective batch) sees the same sizes. The model
needs nothing: its sin-cos tables are computed per grid and cached (``MaskedAutoencoder
.pos_embed``), a learned table is resized to the grid on use.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from typing import Any

from mim.config.errors import ConfigError
from mim.models.factory import ModelConfig, check_decoder_grid, token_grids

KEY = "data.resolution_schedule"
log = logging.getLogger("mim")


@dataclass(frozen=True)
class Stages:
    """Sample shapes ``(C, *spatial)`` by optimiser step; picklable (it goes to loader workers)."""

    shapes: tuple[tuple[int, ...], ...]  # one per stage
    starts: tuple[int, ...]  # the first optimiser step of each stage (starts[0] == 0)
    items_per_step: int  # positions of the source's global order one optimiser step consumes

    def at_step(self, step: int) -> tuple[int, ...]:
        return self.shapes[bisect.bisect_right(self.starts, step) - 1]

    def __call__(self, position: int) -> tuple[int, ...]:
        """The shape of the item at ``position`` of the global order."""
        return self.at_step(position // self.items_per_step)


def stage_shapes(spec: Any) -> list[tuple[int, ...]]:
    """The sample shapes the run's ``data`` schedules ([]: the fixed size throughout)."""
    if spec.modality.resolutions is None:
        return []
    return [tuple(shape) for shape in spec.modality.resolutions(spec.data)]


def valid_sizes(model: ModelConfig, full: tuple[int, ...]) -> list[int]:
    """The square sizes up to the full one the tokenizer accepts (multiples of its patch)."""
    sizes = []
    for size in range(1, full[-1] + 1):
        try:
            token_grids(model, (*full[:-2], size, size))
            sizes.append(size)
        except ValueError:
            pass
    return sizes


def check(model: ModelConfig, mask: Any, shapes: list[tuple[int, ...]],
          full: tuple[int, ...]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """The mask grid of each scheduled shape, keyed by its spatial size; a size the tokenizer or
    the mask policy cannot serve -> one-line ConfigError."""
    grids = {}
    for shape in shapes:
        try:
            grid, mask_grid = token_grids(model, shape)
        except ValueError:
            valid = valid_sizes(model, full)
            raise ConfigError(f"{KEY}: {shape[-1]} does not fit model.patch_size="
                              f"{model.patch_size}; valid: {', '.join(map(str, valid))}"
                              ) from None
        try:
            mask.check(mask_grid)
            check_decoder_grid(model, grid, mask)  # model.decoder_window's windows
        except ValueError as exc:  # MaskConfigError included
            raise ConfigError(f"{KEY}: size {shape[-1]}: {exc}") from None
        grids[tuple(shape[1:])] = mask_grid
    return grids


def plan(shapes: list[tuple[int, ...]], total_steps: int, items_per_step: int) -> Stages | None:
    """Equal stages over ``total_steps`` (a repeated size lengthens its stage); None: no
    schedule."""
    if not shapes:
        return None
    starts, kept = [], []
    for k, shape in enumerate(shapes):
        if kept and kept[-1] == shape:
            continue  # a repeated size continues its stage
        starts.append(math.floor(k * total_steps / len(shapes)))
        kept.append(tuple(shape))
    lengths = [end - start for start, end in zip(starts, [*starts[1:], total_steps])]
    empty = [shape[-1] for shape, n in zip(kept, lengths) if n == 0]
    if empty:  # the sizes are listed (derived.json, --cfg) but never trained on
        log.warning("%s: a %d-step run leaves no step to the stage%s at %s px; give "
                    "train.max_steps at least %d, or fewer sizes", KEY, total_steps,
                    "s" if len(empty) > 1 else "", ", ".join(map(str, empty)), len(shapes))
    return Stages(tuple(kept), tuple(starts), items_per_step)


def describe(stages: Stages | None, model: ModelConfig, mask: Any) -> list[dict] | None:
    """The schedule as ``derived.json`` and ``--cfg`` show it: per stage its first step, input
    size, token grid and masked tokens."""
    if stages is None:
        return None
    out = []
    for start, shape in zip(stages.starts, stages.shapes):
        grid, mask_grid = token_grids(model, shape)
        out.append({"from_step": start, "input": list(shape[1:]), "grid": list(grid),
                     "masked_tokens": mask.num_masked(mask_grid)})
    return out
