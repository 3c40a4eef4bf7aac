"""``backend=xla``: one XLA device through torch_xla (PJRT): a TPU, or the CPU with PJRT_DEVICE=CPU.

torch_xla is imported inside the methods, never at module level: the core must import (and
``mim plugins`` list this backend) where torch_xla is missing. torch_xla pins torch exactly
(torch_xla 2.9.0 needs torch 2.9.0, an ABI match its metadata does not state), so it usually
lives in a venv of its own: ``tests/xla_env.sh`` builds one.

Tensors on an XLA device are lazy: operations are recorded and compiled/executed as one graph
when a step boundary is marked (``torch_xla.sync()``). This backend marks one in
``mean_across_ranks`` (the loop reads the loss there once per micro-step: the sync materialises
the forward together with everything backward needs, instead of running the forward twice) and
one at the end of every ``step`` (after the optimiser step on a boundary, after accumulating
the gradients otherwise), so every micro-step traces the same graphs.

The checkpoint is ``TorchBackend``'s: ``state.pt`` with model, optimizer, scheduler, micro_step
and client state, every tensor moved to the CPU first; a run written under ``backend=xla``
resumes under ``backend=torch`` and the other way round.

What runs here (tested, ``tests/e2e/test_xla.py``): one process, one device, PJRT_DEVICE=CPU,
fp32, batches moved with ``batch.to(device)``; checked by hand only: ``train.precision=bf16``
(``torch.autocast("xla")``) and ``train.accum_steps=2`` with ``train.clip_grad`` (the same loss
curve as backend=torch). Never run on a TPU or GPU through PJRT. Not done: several processes/devices (pods:
``torch_xla.launch`` with an ``xla`` process group, or SPMD sharding) — refused with a clear
error rather than run wrongly; the loader is not wrapped in
``torch_xla.distributed.parallel_loader.MpDeviceLoader`` (it overlaps the host-to-device copy;
``batch.to(device)`` is correct, only slower on a TPU).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mim.config.errors import ConfigError
from mim.engine.backend import TorchBackend
from mim.registry import BACKENDS


def _sync() -> None:
    import torch_xla

    if hasattr(torch_xla, "sync"):
        torch_xla.sync()
    else:  # torch_xla < 2.6
        import torch_xla.core.xla_model as xm

        xm.mark_step()


def _to_cpu(value: Any) -> Any:
    """Every tensor in a nested dict/list/tuple copied to the CPU (checkpoints are device-free)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu() if value.device.type != "cpu" else value
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


@BACKENDS.register("xla")
class XLABackend(TorchBackend):
    """One XLA device (``torch_xla.device()``); the rest is ``TorchBackend``."""

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, compile: bool = False, batch_size: int = 1):
        # TorchBackend.__init__ would pick a CUDA device; the base class is enough here
        super(TorchBackend, self).__init__(precision, accum_steps, clip_grad, batch_size)
        if self.world_size > 1:
            raise ConfigError("backend=xla: runs one process on one XLA device; several "
                              "processes (launcher.nprocs > 1, pods) are not supported yet")
        if compile:
            raise ConfigError("train.compile: not supported with backend=xla (XLA already "
                              "compiles every traced step)")
        self.compile = False
        try:
            import torch_xla
        except (ImportError, OSError) as error:
            raise ConfigError(f"backend=xla: torch_xla cannot be imported ({error}); it needs "
                              "the exact torch version it was built for (torch_xla 2.9.0 -> "
                              "torch 2.9.0), see tests/xla_env.sh") from error
        if hasattr(torch_xla, "device"):
            self.device = torch_xla.device()
        else:  # torch_xla < 2.6
            import torch_xla.core.xla_model as xm

            self.device = xm.xla_device()

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler) -> nn.Module:
        # moving to an XLA device makes new Parameter objects (a CPU tensor's storage cannot be
        # swapped for an XLA one), so the optimiser, built on the CPU parameters, is pointed at
        # the moved ones by name
        names = {id(p): n for n, p in model.named_parameters()}
        model = model.to(self.device)
        moved = dict(model.named_parameters())
        remap = {old: moved[name] for old, name in names.items()}
        for group in optimizer.param_groups:
            group["params"] = [remap.get(id(p), p) for p in group["params"]]
        if optimizer.state:
            optimizer.state = type(optimizer.state)(
                {remap.get(id(p), p): s for p, s in optimizer.state.items()})
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.runner = model
        _sync()
        return self.runner

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        # one process: the value itself; the sync runs the traced forward once, keeping the
        # activations backward needs, so reading the loss does not trace a second forward
        _sync()
        return value

    def step(self) -> bool:
        stepped = super().step()
        _sync()
        return stepped

    def state_dict(self) -> dict[str, Any]:
        _sync()
        return _to_cpu(super().state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # module/optimizer load_state_dict copy/cast the CPU tensors onto the parameters' device
        super().load_state_dict(state)
        _sync()
