"""The model as DeepSpeed's engine sees it (``backend=deepspeed``, ``backend.py``): a root
whose output ZeRO-3 can follow, and the runner that gives the loop mim's output back."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from torch import nn

from mim.models.model import MAEOutput


class TupleOutput(nn.Module):
    """The model as ZeRO-3 can follow it through backward.

    ZeRO-3 gathers a module's weight shards again for backward through hooks on the tensors the
    module returns, and finds them only in tuples, lists and dicts; mim's model returns a
    dataclass (``MAEOutput``), so the weights owned by the model itself (``mask_token``,
    ``cls_token``; its blocks are modules of their own) would stay sharded when their gradients
    arrive. This root returns the fields as a tuple, and those weights are registered as its
    external parameters (``deepspeed.zero.register_external_parameter``): gathered before its
    backward starts. Other stages ignore both.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_type: type | None = None

    def forward(self, *args: Any) -> tuple:
        out = self.model(*args)
        self.output_type = type(out)
        return tuple(getattr(out, f.name) for f in dataclasses.fields(out))


def handled_output_warning(record: logging.LogRecord) -> bool:
    """Drops ZeRO-3's warning that it cannot see into ``MAEOutput``: TupleOutput handles it."""
    return f"<class '{MAEOutput.__module__}.{MAEOutput.__qualname__}'>" not in record.getMessage()


class Runner(nn.Module):
    """What the loop calls: the engine, with the model's output type restored."""

    def __init__(self, engine: nn.Module, root: TupleOutput):
        super().__init__()
        self.engine, self.root = engine, root

    def forward(self, *args: Any) -> Any:
        values = self.engine(*args)
        return self.root.output_type(*values)
