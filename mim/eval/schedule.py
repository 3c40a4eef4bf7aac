"""Per-step learning rate for the trained protocols: linear warmup, then half a cosine.

MAE's linear probing and fine-tuning recipes (Tables 9 and 10) set the lr every iteration from
the fractional epoch: warmup to the peak over ``warmup_epochs``, cosine decay to ``min_lr`` at
the last step.
"""
from __future__ import annotations

import torch

from mim.engine.optim import warmup_cosine


def lr_at(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float, peak: float,
          min_lr: float) -> float:
    """The lr of iteration ``step`` (0-based), from the fractional epoch."""
    return warmup_cosine(step / steps_per_epoch, warmup_epochs, epochs, peak, min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group gets ``lr`` times its own ``lr_scale`` (layer-wise decay), if it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
