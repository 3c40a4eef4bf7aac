"""The launcher contract: what ``mim train`` asks of a registered launcher.

A launcher decides where a run's processes start (``launchers/`` holds mim's own: this machine,
a Slurm job, the hosts of a TPU VM) and calls ``mim.train.train(spec)`` in each. Its parameters
are a ``Config`` dataclass (``launcher.<field>``), checked in validation. A launcher subclasses
``Launcher`` (a ``typing.Protocol`` with defaults) and implements ``launch``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mim.config.run_spec import RunSpec


@runtime_checkable
class Launcher(Protocol):
    def launch(self, spec: RunSpec) -> Path | None:
        """Start the run of ``spec``; its run directory (None where it was only printed)."""

    def launch_sweep(self, specs: list[RunSpec]) -> list[Path | None]:
        """Every point of a sweep (``mim train -m``; each checked before any starts): one after
        another, unless the launcher starts them together (Slurm: one job array)."""
        return [self.launch(spec) for spec in specs]

    @classmethod
    def world_size(cls, config: Any) -> int:
        """The processes a run with these parameters (``config``: the ``Config``) starts,
        known before any process group exists: validation and ``--cfg`` size the run by it."""
        return 1
