"""``backend=xla``: torch_xla with PJRT: a TPU (one host or a pod), or the CPU with PJRT_DEVICE=CPU.

torch_xla is imported inside the methods, never at module level: the core must import (and
``mim plugins`` list this backend) where torch_xla is missing. torch_xla pins torch exactly
(torch_xla 2.9.0 needs torch 2.9.0, an ABI match its metadata does not state), so it usually
lives in a venv of its own: ``tests/xla_env.sh`` builds one.

Tensors on an XLA device are lazy: operations are recorded and compiled/executed as one graph
when a step boundary is marked (``torch_xla.sync()``), which is this backend's ``sync()``. The
loop calls it after each accumulated micro-batch, before reading the step's values (so reading
the loss does not trace a second forward) and after the optimiser step: one device-to-host
read per optimiser step, none per accumulated micro-step. Every step traces the same graphs
(masks come from the loader, so shapes are static).

Batches reach the device through ``torch_xla``'s ``MpDeviceLoader``, which copies the next
batches while the current step runs (and, under SPMD, places each device's slice).

``backend.sharding`` (XLA SPMD, see ``sharding.py``):

- ``none``: one process, one device (``launcher.nprocs > 1`` is refused).
- ``data``: one process per host drives every device of the pod; the batch is split over all
  devices, weights replicated.
- ``fsdp``: as ``data``, and every weight (with its gradient and AdamW moments) is split over
  the devices.

Under SPMD a "rank" is a host: ``train.batch_size`` is per host (each host loads its own part of
the global batch, split over its devices, so it must divide by the host's device count) and
``rank``/``world_size`` are ``process_index``/``process_count``.

Checkpoints (``backend.checkpoint``): ``full`` writes ``backend=torch``'s ``state.pt`` with every
tensor gathered to the CPU (a run written under ``backend=xla`` resumes under ``backend=torch``
and the other way round); ``sharded`` writes each host's shards with
``torch.distributed.checkpoint`` and torch_xla's SPMD planners (``dcp/``) plus ``client.pt``,
needed on a multi-host pod where no host can address every shard; ``auto`` is ``full`` on one
host and ``sharded`` on several. A multi-host run joins a gloo process group
(``init_method="xla://"``) for the checkpoint's coordination and the barriers.

Tested here (``tests/e2e/test_xla.py``, PJRT_DEVICE=CPU): one device; ``data`` and ``fsdp`` over
4 CPU devices (``CPU_NUM_DEVICES=4``) with the loss curve of one device; ``sharded``
checkpoints written and resumed. Not testable here (no TPU pod, and PJRT's CPU client runs
one process only): several hosts.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from mim.data import Batch

from mim.config.errors import ConfigError
from mim.engine.backends.torch import TorchStep
from mim.registry import BACKENDS

log = logging.getLogger("mim")


def _check_processes(sharding: str, world_size: int) -> None:
    if world_size > 1 and sharding == "none":
        raise ConfigError("backend=xla: with backend.sharding=none it runs one process on one "
                          "XLA device; for several devices or hosts set backend.sharding="
                          "data or fsdp (one process per host) instead of launcher.nprocs")


def _check_batch(batch_size: int, devices: int, sharding: str) -> None:
    """SPMD splits each host's batch over its devices."""
    if batch_size % devices:
        raise ConfigError(f"train.batch_size: {batch_size} (per host) does not split over this "
                          f"host's {devices} XLA devices (backend.sharding={sharding}); use a "
                          f"multiple of {devices}")


def _local_devices_from_env() -> int | None:
    """This host's XLA devices where the environment says it before the runtime starts
    (PJRT's CPU client given ``CPU_NUM_DEVICES``); None elsewhere (a TPU host: the runtime
    counts its chips when the run starts, and checks the batch then)."""
    if os.environ.get("PJRT_DEVICE", "").upper() != "CPU" or "CPU_NUM_DEVICES" not in os.environ:
        return None
    return int(os.environ["CPU_NUM_DEVICES"])


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


SHARDINGS = ("none", "data", "fsdp")
CHECKPOINTS = ("auto", "full", "sharded")
DCP_DIR = "dcp"
CLIENT_FILE = "client.pt"


@BACKENDS.register("xla")
class XLABackend(TorchStep):
    """XLA devices through torch_xla: one device, or SPMD over all of them; the step is
    ``TorchStep``'s (the same as ``backend=torch``)."""

    # no fp16: TPUs compute bf16, and torch_xla autocasts to fp16 only on its GPU client, with
    # a GradScaler of its own that TorchStep does not use; validation names the valid values
    valid_precisions = ("auto", "fp32", "bf16")

    @dataclass
    class Config:
        sharding: str = "none"  # none | data | fsdp (SPMD over every device; module docstring)
        checkpoint: str = "auto"  # auto | full (state.pt) | sharded (torch.distributed.checkpoint)
        prefetch: int = 2  # batches MpDeviceLoader keeps on the device ahead of the step

        def __post_init__(self) -> None:
            if self.sharding not in SHARDINGS:
                raise ValueError(f"backend.sharding: '{self.sharding}' is not one of: "
                                 f"{', '.join(SHARDINGS)}")
            if self.checkpoint not in CHECKPOINTS:
                raise ValueError(f"backend.checkpoint: '{self.checkpoint}' is not one of: "
                                 f"{', '.join(CHECKPOINTS)}")
            if self.prefetch < 1:
                raise ValueError(f"backend.prefetch: must be >= 1, got {self.prefetch}")

    @classmethod
    def check_run(cls, train: Any, options: XLABackend.Config, world_size: int) -> None:
        super().check_run(train, options, world_size)
        if train.compile != "none":
            raise ConfigError("train.compile: not supported with backend=xla (XLA already "
                              "compiles every traced step)")
        _check_processes(options.sharding, world_size)
        devices = _local_devices_from_env()
        if options.sharding != "none" and devices is not None:
            _check_batch(train.batch_size, devices, options.sharding)

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, compile: str = "none", batch_size: int = 1,
                 config: XLABackend.Config | None = None):
        super().__init__(precision, accum_steps, clip_grad, batch_size)
        self.options = config if config is not None else self.Config()
        sharding, checkpoint = self.options.sharding, self.options.checkpoint
        self.spmd = sharding != "none"
        _check_processes(sharding, self.world_size)  # torchrun started outside mim's launcher
        self.compile = "none"
        try:
            import torch_xla
            import torch_xla.runtime as xr
        except (ImportError, OSError) as error:
            raise ConfigError(f"backend=xla: torch_xla cannot be imported ({error}); it needs "
                              "the exact torch version it was built for (torch_xla 2.9.0 -> "
                              "torch 2.9.0), see tests/xla_env.sh") from error
        self.mesh = None
        if not self.spmd and xr.process_count() > 1:
            raise ConfigError("backend.sharding: 'none' runs one device, but this is one of "
                              f"{xr.process_count()} hosts; set backend.sharding=data or fsdp")
        if self.spmd:
            xr.use_spmd()  # before any tensor reaches the device
            from mim.engine.backends.xla.sharding import make_mesh

            self.mesh = make_mesh()
            _check_batch(batch_size, xr.addressable_runtime_device_count(), sharding)
            # a rank is a host: it loads its own part of the global batch
            self.rank, self.world_size = xr.process_index(), xr.process_count()
            if self.world_size > 1 and not dist.is_initialized():
                dist.init_process_group("gloo", init_method="xla://")
        self.sharded_checkpoint = (checkpoint == "sharded" or
                                   (checkpoint == "auto" and self.world_size > 1))
        self.sharded_axes: dict[str, int | None] = {}
        self.device = torch_xla.device() if hasattr(torch_xla, "device") else _legacy_device()

    def native_bf16(self) -> tuple[bool, str]:
        """bf16 on TPUs (their matrix units compute it); XLA's CPU and GPU clients stay fp32
        under ``train.precision=auto``."""
        import torch_xla.runtime as xr

        kind = xr.device_type()
        return kind == "TPU", f"XLA device type {kind}"

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
        if self.options.sharding == "fsdp":
            from mim.engine.backends.xla.sharding import shard_parameters

            self.sharded_axes = shard_parameters(model, self.mesh)
        if self.spmd:
            import torch_xla

            # read back from the runtime, not from what was asked for
            split = sum(1 for p in model.parameters()
                        if torch_xla._XLAC._get_xla_sharding_spec(p).startswith("{devices="))
            log.info("xla: sharding=%s over %d devices; %d of %d weight tensors split",
                     self.options.sharding, self.mesh.size(), split,
                     len(list(model.parameters())))
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.runner = model
        _sync()
        return self.runner

    def device_batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """``MpDeviceLoader`` over the batches: the copy of the next ``prefetch`` batches
        overlaps the step; under SPMD each tensor is split along its batch axis."""
        import torch_xla.distributed.parallel_loader as pl

        host: collections.deque = collections.deque()  # non-tensor parts, in batch order

        def tensors() -> Iterator[dict[str, torch.Tensor]]:
            for batch in batches:
                host.append((batch.skipped, batch.items, batch.padded))
                fields = {"x": batch.x, "mask": batch.mask, "label": batch.label}
                for name in ("targets", "coords"):  # the optional ones, where given
                    if getattr(batch, name) is not None:
                        fields[name] = getattr(batch, name)
                yield fields

        source = tensors()
        first = next(source)
        specs = None
        if self.spmd:
            from mim.engine.backends.xla.sharding import batch_specs

            specs = batch_specs(first, self.mesh)
        loader = pl.MpDeviceLoader(itertools.chain([first], source), self.device,
                                   loader_prefetch_size=self.options.prefetch,
                                   device_prefetch_size=self.options.prefetch,
                                   input_sharding=specs)
        for fields in loader:
            skipped, items, padded = host.popleft()
            yield Batch(fields["x"], fields["mask"], fields["label"], skipped,
                        fields.get("targets"), items, padded, fields.get("coords"))

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        return value  # one device, or SPMD: the value is already the global one

    def sync(self) -> None:
        _sync()

    def barrier(self) -> None:
        if self.world_size > 1:  # hosts of a pod, through the gloo group joined in __init__
            dist.barrier()

    def state_dict(self) -> dict[str, Any]:
        _sync()
        return _to_cpu(super().state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # module/optimizer load_state_dict copy/cast the CPU tensors onto the parameters' device
        super().load_state_dict(state)
        _sync()

    # -- sharded checkpoints (torch.distributed.checkpoint with torch_xla's SPMD planners) ---------
    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        if not self.sharded_checkpoint:
            super().save(directory, client_state)
            return
        import torch.distributed.checkpoint as dcp
        from torch_xla.experimental.distributed_checkpoint import SPMDSavePlanner

        _sync()
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        dcp.save(state, storage_writer=dcp.FileSystemWriter(directory / DCP_DIR, sync_files=True),
                 planner=SPMDSavePlanner())
        if self.is_main:
            extra = {"scheduler": self.scheduler.state_dict(), "micro_step": self.micro_step,
                     "client": client_state}
            with open(directory / CLIENT_FILE, "wb") as f:
                torch.save(extra, f)
                f.flush()
                os.fsync(f.fileno())

    def load(self, directory: Path) -> dict[str, Any]:
        if not (directory / DCP_DIR).is_dir():
            return super().load(directory)  # state.pt (backend=torch, or checkpoint=full)
        import torch.distributed.checkpoint as dcp
        from torch_xla.experimental.distributed_checkpoint import (SPMDLoadPlanner,
                                                                   prime_optimizer)

        prime_optimizer(self.optimizer)  # AdamW's moments exist (sharded) before loading
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        dcp.load(state, storage_reader=dcp.FileSystemReader(directory / DCP_DIR),
                 planner=SPMDLoadPlanner())
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        extra = torch.load(directory / CLIENT_FILE, map_location="cpu", weights_only=True)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.micro_step = extra["micro_step"]
        _sync()
        return extra["client"]


def _legacy_device() -> torch.device:  # torch_xla < 2.6
    import torch_xla.core.xla_model as xm

    return xm.xla_device()
