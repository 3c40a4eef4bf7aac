"""Backends run the optimisation step; the training loop never asks which one it has.

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

from mim import faults
from mim.config.errors import ConfigError
from mim.engine import compiling
from mim.engine import precision as precisions
from mim.engine.checkpoint import check_fits, load_weights_only
from mim.engine.scaler import LossScaling
from mim.registry import BACKENDS

STATE_FILE = "state.pt"


def local_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` as torchrun and the local launcher set it), else CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


class Backend(precisions.Precision, abc.ABC):
    """The contract of a backend, and the distributed facts every backend shares.

    Built from the train settings it needs and its typed ``Config`` (``backend.*`` of the run
    config; None for a backend without parameters). ``compile`` is the normalised
    ``train.compile`` mode (none | blocks | model; the schema normalises it). A subclass sets
    ``device`` and ``compile`` in its ``__init__``.
    """

    Config: ClassVar[type | None] = None  # the dataclass of its ``backend.*`` parameters
    can_skip_steps: ClassVar[bool] = False  # whether ``skip_step`` exists (train.nonfinite=skip)
    device: torch.device
    compile: str

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


class TorchStep(Backend):
    """The plain-PyTorch optimisation step, state and ``state.pt`` checkpoint (shared by
    ``backend=torch`` and ``backend=xla``); a subclass chooses the device and wraps the model
    in ``setup``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def module(self) -> nn.Module:
        """The bare model (unwrapped from DDP)."""
        return getattr(self.model, "module", self.model)

    def _accumulating(self, boundary: bool) -> contextlib.AbstractContextManager:
        """The context of a backward pass (DDP: no gradient all-reduce off the boundary)."""
        return contextlib.nullcontext()

    @functools.cached_property
    def scaling(self) -> LossScaling | None:
        """fp16's dynamic loss scale (``mim/engine/scaler.py``), None in other precisions."""
        return LossScaling(self.device) if self.precision == "fp16" else None

    def precision_metrics(self) -> dict[str, Any]:
        return self.scaling.metrics() if self.scaling is not None else {}

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        loss = loss / self.accum_steps
        with self._accumulating(boundary):
            (self.scaling.scale(loss) if self.scaling is not None else loss).backward()

    can_skip_steps = True

    def grad_norm(self) -> torch.Tensor | None:
        if self.scaling is not None:  # fp16: an overflow is the scaler's to skip (scaler.py)
            return None
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        if not grads:
            return None
        # after backward on a boundary DDP has already averaged them: the same on every rank
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def skip_step(self) -> None:
        """Drop the accumulated gradients instead of stepping (a non-finite step under
        train.nonfinite=skip); the schedule still advances, so the step count stays aligned
        with the data position."""
        self.micro_step += self.accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def step(self) -> None:
        self.micro_step += self.accum_steps  # the micro-batches of the step, data position
        if self.scaling is not None:  # unscale, clip, step unless overflowed, update the scale
            self.scaling.step(self.optimizer, self.module.parameters(), self.clip_grad)
        else:
            if self.clip_grad:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "micro_step": self.micro_step}
        if self.scaling is not None:
            state["scaler"] = self.scaling.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_step = state["micro_step"]
        if self.scaling is not None and "scaler" in state:  # none: written in another precision
            self.scaling.load_state_dict(state["scaler"])

    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        """Write the full state into ``directory`` (an unpublished temp dir; rank 0 only)."""
        if self.is_main:
            with open(directory / STATE_FILE, "wb") as f:
                torch.save({**self.state_dict(), "client": client_state}, faults.cut_short(f))
                f.flush()
                os.fsync(f.fileno())

    def load(self, directory: Path) -> dict[str, Any]:
        from mim.engine import ds_to_torch

        written = ds_to_torch.written_by_deepspeed(directory)
        if written is not None and written["zero_stage"] != 0:
            state = ds_to_torch.load_deepspeed(directory, self.module, self.accum_steps,
                                               self.is_main, self.barrier)
        elif not (directory / STATE_FILE).is_file():  # e.g. written by DeepSpeed ZeRO-0
            raise ConfigError(f"backend: checkpoint {directory} was not written by backend=torch "
                              "nor by backend=deepspeed with ZeRO 1-3; resume with the backend "
                              "that wrote it, or set run.resume=never or another run.dir")
        else:
            state = load_weights_only(directory / STATE_FILE)
        check_fits(state.get("model", {}), self.module.state_dict(), directory)
        self.load_state_dict(state)
        return state["client"]


@BACKENDS.register("torch")
class TorchBackend(TorchStep):
    """Plain PyTorch on this process's GPU or the CPU: one process, or DistributedDataParallel
    when a process group exists."""

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, compile: str = "none", batch_size: int = 1,
                 config: None = None):
        super().__init__(precision, accum_steps, clip_grad, batch_size)
        self.compile = compile
        self.device = local_device()

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler) -> nn.Module:
        self.model = model.to(self.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        if self.compile == "blocks":
            compiling.compile_blocks(self.model)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.runner = torch.compile(self.model) if self.compile == "model" else self.model
        return self.runner

    def _accumulating(self, boundary: bool) -> contextlib.AbstractContextManager:
        if boundary or self.world_size == 1:
            return contextlib.nullcontext()
        return self.model.no_sync()  # DDP all-reduces the gradients on the boundary only
