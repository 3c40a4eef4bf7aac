"""``launcher=local``: train in this process.

Under ``torchrun`` every process it starts runs ``mim train`` and so this launcher; the torch
backend then finds the process group from the environment and wraps the model in DDP.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mim.config.compose import RunSpec
from mim.registry import LAUNCHERS
from mim.train import train


@LAUNCHERS.register("local")
class LocalLauncher:
    @dataclass
    class Config:
        pass

    def launch(self, spec: RunSpec) -> Path:
        return train(spec)
