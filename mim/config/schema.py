"""Typed schemas of the config sections that the core owns.

Defaults are the paper's recipe (MAE, Appendix A.1): ViT-B/16 at 224, random masking 0.75,
norm-pix loss, batch 64 per process, 800 epochs with 40 warmup epochs, AdamW, blr 1.5e-4.
Sections owned by a plugin (``data`` by the modality, ``mask`` by the policy) are checked
against that plugin's dataclass after composition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mim.engine import compiling
from mim.engine.precision import PRECISIONS


@dataclass
class TrainConfig:
    batch_size: int = 64  # per process; effective batch = batch_size x accum_steps x world size
    epochs: int = 800  # passes over the data (unless max_steps is set)
    max_steps: Optional[int] = None  # optimiser steps; overrides epochs when set
    accum_steps: int = 1  # micro-batches accumulated per optimiser step
    clip_grad: Optional[float] = None  # clip the gradient norm to this; None: no clipping
    # auto (bf16 where computed natively, else fp32) | fp32 | bf16 (autocast) | fp16 (autocast
    # with dynamic loss scaling: overflowing steps skipped, counted in metrics.jsonl)
    precision: str = "auto"
    compile: str = "none"  # none | blocks (each transformer block; true) | model (whole forward)
    num_workers: int = 4  # data-loading processes per training process
    log_every: int = 10  # optimiser steps between lines of metrics.jsonl and the log
    ckpt_every: int = 500  # optimiser steps between checkpoints (and one at the end)
    keep_last: int = 2  # checkpoints kept (older ones are deleted)
    vis_every: int = 1000  # steps between reconstruction pictures (and one at the end)
    vis_samples: int = 4  # samples in each reconstruction picture
    # reliability (README "What mim guarantees")
    nonfinite: str = "stop"  # stop | skip: a NaN/Inf loss or gradient stops the run, or skips the step
    max_nonfinite_skips: int = 10  # with nonfinite=skip: stop after this many skipped steps in a row
    max_unreadable: float = 0.5  # stop when more than this fraction of items read is unreadable
    timeout: Optional[float] = 1800.0  # seconds one step (data + compute) may take; None: no limit

    def __post_init__(self) -> None:
        for key in ("batch_size", "epochs", "accum_steps", "log_every", "ckpt_every",
                    "keep_last", "vis_every", "vis_samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps: must be >= 1, got {self.max_steps}")
        if self.num_workers < 0:
            raise ValueError(f"train.num_workers: must be >= 0, got {self.num_workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision: '{self.precision}' is not one of: "
                             f"{', '.join(PRECISIONS)}")
        self.compile = compiling.mode(self.compile)
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"train.clip_grad: must be > 0, got {self.clip_grad}")
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.nonfinite: '{self.nonfinite}' is not one of: stop, skip")
        if self.max_nonfinite_skips < 1:
            raise ValueError(f"train.max_nonfinite_skips: must be >= 1, "
                             f"got {self.max_nonfinite_skips}")
        if not 0.0 <= self.max_unreadable <= 1.0:
            raise ValueError(f"train.max_unreadable: must be in [0, 1], got {self.max_unreadable}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"train.timeout: must be > 0 seconds (or null: no limit), "
                             f"got {self.timeout}")


@dataclass
class OptimConfig:
    name: str = "adamw"  # the optimiser (only adamw)
    blr: float = 1.5e-4  # base lr; lr = blr x effective batch / 256
    lr: Optional[float] = None  # absolute lr; overrides blr when set
    # AdamW's (beta1, beta2); MAE: 0.9, 0.95
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05  # AdamW's decoupled weight decay (not on norms and biases)
    # linear lr warmup, then a cosine decay to min_lr; with train.max_steps the same share of
    # the run (warmup_epochs / epochs of max_steps: 5 % by default)
    warmup_epochs: float = 40.0
    warmup_steps: Optional[int] = None  # overrides warmup_epochs when set
    min_lr: float = 0.0  # the lr at the end of the cosine decay

    def __post_init__(self) -> None:
        if self.name != "adamw":
            raise ValueError(f"optim.name: '{self.name}' is not one of: adamw")
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("optim.blr / optim.lr: must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas: two values in [0, 1) expected, got {self.betas}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.min_lr < 0:
            raise ValueError("optim.weight_decay / warmup_epochs / min_lr: must be >= 0")


@dataclass
class RunConfig:
    dir: Optional[str] = None  # default: <root>/<modality>/<model>/<hash of the config>
    root: str = "runs"  # folder of the default run directories
    # auto | never | must | force (resume even from a checkpoint trained with another config:
    # mim/config/history.py says which differences need it)
    resume: str = "auto"

    def __post_init__(self) -> None:
        if self.resume not in ("auto", "never", "must", "force"):
            raise ValueError(f"run.resume: '{self.resume}' is not one of: auto, never, must, "
                             "force")


@dataclass
class BaseConfig:
    """The typed part of the primary config (Hydra checks overrides against it)."""

    # seeds the weights, the masks and the data order (a run with the same seed repeats)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
