"""``backend=torch``: plain PyTorch on this process's GPU or the CPU, one process or DDP.

``TorchStep`` is the plain-PyTorch optimisation step, state and ``state.pt`` checkpoint, which
``backend=xla`` shares (``mim/engine/backends/xla/backend.py``); ``TorchBackend`` chooses the
device and wraps the model. A ``backend=deepspeed`` checkpoint of ZeRO 1-3 resumes here through
``mim/engine/backends/deepspeed/to_torch.py``.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mim import faults
from mim.config.errors import ConfigError
from mim.engine import compiling
from mim.engine.backends.base import STATE_FILE, Backend, local_device
from mim.engine.checkpoint import check_fits, load_weights_only
from mim.engine.scaler import LossScaling
from mim.registry import BACKENDS


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
        from mim.engine.backends.deepspeed import layout, to_torch

        written = layout.written_layout(directory)
        if written is not None and written["zero_stage"] != 0:
            state = to_torch.load_deepspeed(directory, self.module, self.accum_steps,
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
