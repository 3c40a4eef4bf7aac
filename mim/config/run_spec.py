"""``RunSpec``: a run's validated config, what every part of a run reads (built by
``mim.config.compose.validate``), and ``Plugin``, a chosen backend or launcher."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from mim.config.schema import OptimConfig, RunConfig, TrainConfig
from mim.masking import MaskPolicy
from mim.models.factory import ModelConfig
from mim.spec import ModalitySpec


@dataclass(frozen=True)
class Plugin:
    """A chosen backend or launcher: its registered name and its typed parameters (an object
    of the class's ``Config`` dataclass, built and checked once here; None for a class
    without parameters)."""

    name: str
    config: Any = None


@dataclass
class RunSpec:
    """The validated config: typed sections plus the composed tree (saved as config.yaml)."""

    raw: DictConfig
    seed: int
    train: TrainConfig
    optim: OptimConfig
    run: RunConfig
    model: ModelConfig
    mask: MaskPolicy
    modality: ModalitySpec
    data: Any  # the modality's data-config dataclass
    backend: Plugin
    launcher: Plugin
    trackers: tuple[str, ...] = ("tensorboard",)  # ``tracker=``: one name or a list
    overrides: tuple[str, ...] | None = None  # the command line of ``load`` (a launcher re-runs it)
    # the token grid of the samples and the grid masks are drawn on (``token_grid``), computed
    # once by ``validate``
    grid: tuple[int, ...] = ()
    mask_grid: tuple[int, ...] = ()
    # the mask grid of each progressive-resolution stage, by spatial size (``resolution.check``)
    stage_grids: dict[tuple[int, ...], tuple[int, ...]] = dataclasses.field(default_factory=dict)
    # what composition adapted, one line each (the demo experiment of a run with no data of
    # its own); the run logs them, ``--cfg`` prints them
    notes: tuple[str, ...] = ()
