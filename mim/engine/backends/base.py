"""The contract of a backend (``Backend``), which runs the optimisation step; the training
loop never asks which one it has. Also what every backend shares: ``local_device``, and
``STATE_FILE`` (``mim/engine/checkpoint.py``), the torch step's checkpoint file, which the
DeepSpeed backend and ``mim convert`` read too.

``Backend`` is the contract (docs/ARCHITECTURE.md): everything ``mim/engine/loop.py`` and
``mim/train.py`` call. One optimiser step is ``accum_steps`` calls of ``backward(loss,
boundary)`` (``boundary`` True on the last micro-batch: DDP synchronises gradients only then,
DeepSpeed advances its own accumulation counter on the others), then ``step()`` or
``skip_step()``. ``sync()`` marks the end of a lazily traced graph (XLA) and is a no-op
elsewhere: the loop calls it after each accumulated micro-batch, before reading the step's
values and after the optimiser step.
"""
from __future__ import annotations

import abc
import contextlib
import functools
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
import torch.distributed as dist
from torch import nn

from mim.config.errors import ConfigError
from mim.engine import precision as precisions
from mim.engine.checkpoint import STATE_FILE
from mim.registry import BACKENDS


def local_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` as torchrun and the local launcher set it), else CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


class Backend(abc.ABC):
    """The contract of a backend, and the distributed facts and precision every backend shares.

    Built from the train settings it needs and its typed ``Config`` (``backend.*`` of the run
    config; None for a backend without parameters). ``compile`` is the normalised
    ``train.compile`` mode (none | blocks | model; the schema normalises it). A subclass sets
    ``device`` and ``compile`` in its ``__init__``, and may override ``native_bf16`` for its
    device (what ``train.precision=auto`` picks).
    """

    Config: ClassVar[type | None] = None  # the dataclass of its ``backend.*`` parameters
    can_skip_steps: ClassVar[bool] = False  # whether ``skip_step`` exists (train.nonfinite=skip)
    valid_precisions: tuple[str, ...] = precisions.PRECISIONS  # the train.precision values it runs
    device: torch.device
    compile: str
    asked_precision: str  # train.precision as the run config says it (auto unresolved)

    @classmethod
    def check_run(cls, train: Any, options: Any, world_size: int) -> None:
        """Refuse what this backend cannot run in the other sections of a run config
        (``train``: the ``TrainConfig``; ``options``: its ``Config``; ``world_size``: the
        processes the launcher starts), as one ``ConfigError`` line. Validation calls it, so a
        run and ``--cfg`` refuse alike, before any process or model exists."""
        name = next((n for n in BACKENDS.names() if BACKENDS.get(n) is cls), cls.__name__)
        if train.precision not in cls.valid_precisions:
            raise ConfigError(f"train.precision: '{train.precision}' is not supported with "
                              f"backend={name}; valid there: {', '.join(cls.valid_precisions)}")
        if train.nonfinite == "skip" and not cls.can_skip_steps:
            raise ConfigError(f"train.nonfinite: 'skip' is not supported by backend={name}; "
                              "valid there: stop")

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, batch_size: int = 1):
        precisions.resolve(precision, (False, ""))  # a bad value fails here, before any work
        self.asked_precision, self.accum_steps, self.clip_grad = (precision, accum_steps,
                                                                  clip_grad)
        self.batch_size = batch_size  # clips per process and micro-step (DeepSpeed asks for it)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.micro_step = 0  # micro-batches consumed (checkpointed; equals step x accum_steps)

    # -- the distributed facts ------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def layout(self) -> dict[str, Any]:
        """How the run is laid out over processes (recorded with each checkpoint)."""
        return {"world_size": self.world_size}

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks (a collective; no host read)."""
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sync(self) -> None:
        """Run what has been traced so far (XLA's graph step); eager backends have nothing to
        run."""

    # -- precision (mim/engine/precision.py: the rules of train.precision) ------------------------
    def native_bf16(self) -> tuple[bool, str]:
        """Whether this backend's device computes bf16 natively (``train.precision=auto``)."""
        return precisions.native_bf16(self.device)

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: ``train.precision``, with ``auto`` resolved for this device."""
        return self.precision_and_reason[0]

    @functools.cached_property
    def precision_and_reason(self) -> tuple[str, str]:
        return precisions.resolve(self.asked_precision, self.native_bf16())

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = precisions.DTYPES.get(self.precision)
        return (torch.autocast(self.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())

    def precision_metrics(self) -> dict[str, Any]:
        """What ``metrics.jsonl`` reports of the precision: fp16's ``loss_scale`` and
        cumulative ``overflow_steps`` (skipped by the loss scaler); nothing otherwise."""
        return {}

    # -- the optimisation step ------------------------------------------------------------------
    @abc.abstractmethod
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler) -> nn.Module:
        """Place and wrap the model; returns the module the loop calls (the runner)."""

    def device_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Batches moved to this backend's device (``Batch.to``), one at a time."""
        for batch in batches:
            yield batch.to(self.device, non_blocking=True)

    @abc.abstractmethod
    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        """Accumulate the gradients of one micro-batch's loss (scaled by 1 / accum_steps);
        ``boundary``: the last micro-batch of the optimiser step."""

    def grad_norm(self) -> torch.Tensor | None:
        """The global L2 norm of the accumulated gradients (a 0-d tensor on the device), or
        None where the backend cannot see them (DeepSpeed keeps them in its own buffers)."""
        return None

    @abc.abstractmethod
    def step(self) -> None:
        """Apply the optimiser step (clip, step, zero the gradients, advance the schedule)."""

    def skip_step(self) -> None:
        """Drop the accumulated gradients instead of stepping (``can_skip_steps``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot skip a step")

    @abc.abstractmethod
    def lr(self) -> float:
        """The learning rate of the first parameter group."""

    # -- state ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        """Write the full state into ``directory`` (an unpublished temp dir)."""

    @abc.abstractmethod
    def load(self, directory: Path) -> dict[str, Any]:
        """Load what ``save`` wrote; returns its ``client_state``."""
