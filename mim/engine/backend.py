"""Backends run the optimisation step; the training loop never asks which one it has.

Contract (DESIGN.md): ``setup(model, optimizer, scheduler)``, ``backward(loss)``, ``step()``,
``state_dict()`` / ``load_state_dict()``, ``save(dir)`` / ``load(dir)``. Gradient accumulation
lives here because engines differ in how they do it (DDP's ``no_sync``, DeepSpeed's own
counter): the loop calls ``backward`` and ``step`` once per micro-batch and ``step`` returns
True when an optimiser step was taken.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from mim import faults
from mim.config.errors import ConfigError
from mim.engine import compiling
from mim.engine import precision as precisions
from mim.registry import BACKENDS

STATE_FILE = "state.pt"


def local_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` as torchrun and the local launcher set it), else CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


class Backend:
    """Base class: holds the distributed facts every backend shares."""

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, batch_size: int = 1):
        precisions.resolve(precision, (False, ""))  # a bad value fails here, before any work
        self.asked_precision, self.accum_steps, self.clip_grad = (precision, accum_steps,
                                                                  clip_grad)
        self.batch_size = batch_size  # clips per process and micro-step (DeepSpeed asks for it)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.micro_step = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def native_bf16(self) -> tuple[bool, str]:
        """Whether this backend's device computes bf16 natively (``train.precision=auto``)."""
        return precisions.native_bf16(self.device)

    @property
    def precision(self) -> str:
        """fp32 or bf16: ``train.precision``, with ``auto`` resolved for this device."""
        return self.precision_and_reason[0]

    @functools.cached_property
    def precision_and_reason(self) -> tuple[str, str]:
        return precisions.resolve(self.asked_precision, self.native_bf16())

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def at_boundary(self) -> bool:
        """True when the next ``step()`` call takes an optimiser step (the last micro-batch of
        an accumulation window)."""
        return (self.micro_step + 1) % self.accum_steps == 0

    can_skip_steps = False  # whether ``skip_step`` exists (train.nonfinite=skip)

    def grad_norm(self) -> torch.Tensor | None:
        """The global L2 norm of the accumulated gradients (a 0-d tensor on the device), or
        None where the backend cannot see them (DeepSpeed keeps them in its own buffers)."""
        return None

    def device_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Batches moved to this backend's device (``Batch.to``), one at a time."""
        for batch in batches:
            yield batch.to(self.device, non_blocking=True)

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class _KilledMidWrite:
    """A file that passes the ``ckpt.half_written`` fault point once, when its first 64 KiB
    are on disk (tests only: a checkpoint file cut short)."""

    def __init__(self, file: Any):
        self.file, self.written, self.passed = file, 0, False

    def write(self, data: bytes) -> int:
        written = self.file.write(data)
        self.written += written
        if not self.passed and self.written >= 1 << 16:
            self.passed = True
            self.file.flush()
            faults.kill("ckpt.half_written")
        return written

    def flush(self) -> None:
        self.file.flush()


def _faulty(file: Any) -> Any:
    return _KilledMidWrite(file) if faults.ENV in os.environ else file


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """Plain PyTorch: one process, or DistributedDataParallel when a process group exists."""

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, compile: str | bool = "none",
                 batch_size: int = 1):
        super().__init__(precision, accum_steps, clip_grad, batch_size)
        self.compile = compiling.mode(compile)
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

    @property
    def module(self) -> nn.Module:
        """The bare model (unwrapped from DDP)."""
        return getattr(self.model, "module", self.model)

    def backward(self, loss: torch.Tensor) -> None:
        sync = self.at_boundary() or self.world_size == 1
        context = contextlib.nullcontext() if sync else self.model.no_sync()
        with context:
            (loss / self.accum_steps).backward()

    can_skip_steps = True

    def grad_norm(self) -> torch.Tensor | None:
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        if not grads:
            return None
        # after backward on a boundary DDP has already averaged them: the same on every rank
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def skip_step(self) -> None:
        """Drop the accumulated gradients instead of stepping (a non-finite step under
        train.nonfinite=skip); the schedule still advances, so the step count stays aligned
        with the data position."""
        self.micro_step += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def step(self) -> bool:
        boundary = self.at_boundary()
        self.micro_step += 1
        if not boundary:
            return False
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return True

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "micro_step": self.micro_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_step = state["micro_step"]

    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        """Write the full state into ``directory`` (an unpublished temp dir; rank 0 only)."""
        if self.is_main:
            with open(directory / STATE_FILE, "wb") as f:
                torch.save({**self.state_dict(), "client": client_state}, _faulty(f))
                f.flush()
                os.fsync(f.fileno())

    def load(self, directory: Path) -> dict[str, Any]:
        if not (directory / STATE_FILE).is_file():  # e.g. written by backend=deepspeed
            raise ConfigError(f"backend: checkpoint {directory} was not written by backend=torch; "
                              "resume with the backend that wrote it, or set run.resume=never "
                              "or another run.dir")
        state = load_weights_only(directory / STATE_FILE)
        check_fits(state.get("model", {}), self.module.state_dict(), directory)
        self.load_state_dict(state)
        return state["client"]


def load_weights_only(path: Path) -> dict[str, Any]:
    """``torch.load`` that never executes pickled code: tensors and plain containers only
    (``weights_only=True``); anything else -> CheckpointError naming the file."""
    from mim.engine.checkpoint import CheckpointError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch names the refused global on a "WeightsUnpickler error: ..." line
        why = next((line for line in lines if "Unpickler error" in line),
                   lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"refused to load {path}: it holds pickled objects other than "
                              f"tensors and plain containers, which could run code when "
                              f"unpickled (weights_only=True; {why})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def check_fits(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
               where: Path) -> None:
    """A checkpoint written for another model -> ConfigError listing the mismatched keys."""
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    shapes = sorted(k for k in set(saved) & set(current)
                    if tuple(saved[k].shape) != tuple(current[k].shape))
    if not (missing or unexpected or shapes):
        return

    def listed(names: list[str], what: str, limit: int = 6) -> str:
        more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
        return f"{what}: {', '.join(names[:limit])}{more}"

    parts = [listed(missing, "missing"), listed(unexpected, "unexpected"),
             "shape mismatch: " + ", ".join(
                 f"{k} {tuple(saved[k].shape)} vs {tuple(current[k].shape)}"
                 for k in shapes[:6]) + (f" (+{len(shapes) - 6} more)" if len(shapes) > 6 else "")]
    found = "; ".join(p for p, names in zip(parts, (missing, unexpected, shapes)) if names)
    raise ConfigError(f"run.dir: checkpoint {where} was written for another model ({found}); "
                      "use the model settings it was trained with, or another run.dir, or "
                      "run.resume=never")
