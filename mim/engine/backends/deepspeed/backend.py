"""``backend=deepspeed``: ZeRO stages 0-3 through DeepSpeed's engine (Rajbhandari et al. 2020).

DeepSpeed is imported inside the methods, never at module level: the core must import (and
``mim plugins`` list this backend) where DeepSpeed is missing or slow to import. It is an extra
(``mim-pretrain[deepspeed]``); choosing this backend without it is a one-line config error.
The engine owns gradient accumulation, gradient clipping, bf16 or fp16 master weights, fp16's
dynamic loss scale and the sharded checkpoint; this class only maps mim's settings onto its config
and the Backend contract onto its methods. On a CPU machine DeepSpeed picks gloo; its
shared-memory comm op is not built (``_skip_inference_comm_op``).

fp16: DeepSpeed's own loss scale skips overflows (and, unlike torch, the schedule's step); on
most CPUs DeepSpeed cannot run it (``mim/engine/scaler.py``, ``deepspeed_fp16``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mim.config.errors import ConfigError
from mim.engine import compiling
from mim.engine.backends.base import STATE_FILE, Backend, local_device
from mim.engine.backends.deepspeed.layout import TAG, write_layout, written_layout
from mim.engine.backends.deepspeed.wrapping import Runner, TupleOutput, handled_output_warning
from mim.engine.checkpoint import fsync_tree
from mim.engine.scaler import deepspeed_fp16
from mim.registry import BACKENDS

_NEVER = 2**31 - 1  # steps_per_print: mim logs progress itself


def _skip_inference_comm_op() -> None:
    """DeepSpeed's comm layer JIT-compiles a shared-memory op where the accelerator is the CPU: a
    C++ build of about a minute in each new environment, which also needs a compiler. The op
    serves only ``inference_all_reduce`` (tensor-parallel inference), never a training
    collective, so it is marked unavailable, as DeepSpeed marks an op its machine cannot build."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")  # None off the CPU
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


@BACKENDS.register("deepspeed")
class DeepSpeedBackend(Backend):
    @dataclass
    class Config:
        # ZeRO (Rajbhandari et al. 2020): 0 plain data parallel, 1 shards the optimiser state,
        # 2 also the gradients, 3 also the weights
        zero_stage: int = 2
        offload_optimizer: bool = False  # ZeRO-Offload: optimiser state and step on the CPU
        fused_adam: bool = False  # DeepSpeed's own AdamW (compiled on first use) instead of torch's

        def __post_init__(self) -> None:
            # here, at validation: a missing extra stops the run before any process or compute
            if importlib.util.find_spec("deepspeed") is None:
                raise ValueError("backend=deepspeed: DeepSpeed is not installed; install it with "
                                 "pip install 'mim-pretrain[deepspeed]'")
            if self.zero_stage not in (0, 1, 2, 3):
                raise ValueError(f"backend.zero_stage: must be 0, 1, 2 or 3, got {self.zero_stage}")
            if self.offload_optimizer and self.zero_stage == 0:
                raise ValueError("backend.offload_optimizer: needs backend.zero_stage >= 1")

    @classmethod
    def check_run(cls, train: Any, options: DeepSpeedBackend.Config, world_size: int) -> None:
        super().check_run(train, options, world_size)
        if train.compile != "none" and options.zero_stage == 3:
            # ZeRO-3 gathers each layer's weights in module hooks: they split a compiled block
            # into a graph per layer, and whole-model compilation fails on weights read
            # outside their module's forward (the patch embedding's)
            raise ConfigError(f"train.compile: '{train.compile}' is not supported with "
                              "backend.zero_stage=3; valid there: none (or zero_stage 0-2)")

    def __init__(self, precision: str = "fp32", accum_steps: int = 1,
                 clip_grad: float | None = None, compile: str = "none", batch_size: int = 1,
                 config: DeepSpeedBackend.Config | None = None):
        super().__init__(precision, accum_steps, clip_grad, batch_size)
        self.options, self.compile = config if config is not None else self.Config(), compile
        self.device = local_device()
        self.fp16 = deepspeed_fp16(self.precision == "fp16", self.device)  # refused on most CPUs

    def native_bf16(self) -> tuple[bool, str]:
        """``auto`` picks DeepSpeed's bf16 mode (bf16 weights, fp32 master copy) on CUDA devices
        that compute bf16 natively; on CPUs DeepSpeed is for development and stays fp32."""
        if self.device.type != "cuda":
            return False, "backend=deepspeed on a CPU"
        return super().native_bf16()

    def _ds_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        o = self.options
        zero: dict[str, Any] = {"stage": o.zero_stage, **(
            {"offload_optimizer": {"device": "cpu"}} if o.offload_optimizer else {})}
        config: dict[str, Any] = {
            # DeepSpeed derives train_batch_size = micro x accumulation x world size; it needs
            # the micro batch (it asserts without one) although mim feeds the batches itself
            "train_micro_batch_size_per_gpu": self.batch_size,
            "gradient_accumulation_steps": self.accum_steps,
            "gradient_clipping": float(self.clip_grad or 0.0),
            "zero_optimization": zero,
            "bf16": {"enabled": self.precision == "bf16"},
            "fp16": self.fp16,
            "steps_per_print": _NEVER,
            # a torch optimiser under ZeRO-Offload is allowed (slower than DeepSpeed's CPU Adam,
            # which fused_adam selects, but it needs no compiled op)
            "zero_force_ds_cpu_optimizer": False,
        }
        if o.fused_adam:
            d = optimizer.defaults
            config["optimizer"] = {"type": "AdamW", "params": {
                "lr": d["lr"], "betas": list(d["betas"]), "eps": d["eps"],
                "weight_decay": d["weight_decay"]}}
        return config

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler) -> nn.Module:
        import deepspeed

        if not dist.is_initialized():
            # one process, not under torchrun: DeepSpeed would look for MPI (mpi4py) to find
            # its peers, and it asserts that LOCAL_RANK is set; a one-rank group on an in-memory
            # store needs neither a port nor MPI
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    store=dist.HashStore(), rank=0, world_size=1)
            os.environ.setdefault("LOCAL_RANK", "0")
        self.model = model
        if self.options.fused_adam:
            # DeepSpeed builds its AdamW over the same parameter groups (MAE's no-decay split,
            # each group keeps its weight_decay); the schedule is rebuilt on that optimiser from
            # the same per-step factors
            params: Any = [{"params": g["params"], "weight_decay": g["weight_decay"]}
                           for g in optimizer.param_groups]
            lambdas = scheduler.lr_lambdas  # mim's schedules are LambdaLR (engine/optim.py)
            client_optimizer = None
            client_scheduler: Any = (
                lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambdas))
        else:
            params, client_optimizer, client_scheduler = None, optimizer, scheduler
        logging.getLogger("DeepSpeed").addFilter(handled_output_warning)
        _skip_inference_comm_op()
        if self.compile == "blocks":
            compiling.compile_blocks(model)
        self.root = TupleOutput(model)
        for param in model.parameters(recurse=False):  # e.g. mask_token: see TupleOutput
            deepspeed.zero.register_external_parameter(self.root, param)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.root, optimizer=client_optimizer, model_parameters=params,
            lr_scheduler=client_scheduler, config=self._ds_config(optimizer))
        if self.compile == "model":
            self.engine.compile()
        self.runner = Runner(self.engine, self.root)
        return self.runner

    @property
    def module(self) -> nn.Module:
        """The bare model (under ZeRO-3 its parameters are shards; see ``state_dict``)."""
        return self.model

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        # the engine keeps its own micro-step counter: it must agree with the loop's
        if self.engine.is_gradient_accumulation_boundary() != boundary:
            raise RuntimeError(f"DeepSpeed's accumulation counter is off the loop's: micro-step "
                               f"{self.micro_step}, boundary={boundary}")
        self.engine.backward(loss)  # divides by the accumulation steps itself
        if not boundary:
            self._engine_step()  # advances the engine's counter; no optimiser step

    def step(self) -> None:
        self._engine_step()  # on a boundary: the optimiser and the schedule step

    def _engine_step(self) -> None:
        self.engine.step()
        self.micro_step += 1

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def precision_metrics(self) -> dict[str, Any]:
        return {"loss_scale": float(self.engine.optimizer.loss_scale),
                "overflow_steps": self.engine.skipped_steps} if self.precision == "fp16" else {}

    def state_dict(self) -> dict[str, Any]:
        """The whole model in fp32 on the CPU, on every rank (collective under ZeRO-3).

        The weights come from the optimiser's fp32 master copy (DeepSpeed's public
        ``safe_get_full_fp32_param``, which gathers ZeRO shards); a parameter without one (no
        ZeRO partitioning, fp32) is itself the master. Optimiser state lives only in ``save``.
        """
        from deepspeed.utils import safe_get_full_fp32_param

        model = {}
        for name, value in self.module.state_dict(keep_vars=True).items():
            full = safe_get_full_fp32_param(value) if isinstance(value, nn.Parameter) else None
            tensor = (full if full is not None else value).detach()
            dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
            model[name] = tensor.to("cpu", dtype, copy=True)  # a snapshot, not the live weights
        return {"model": model}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load model weights (as ``state_dict`` gives them): the fp32 masters and the module."""
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param

        weights = state["model"]
        params = dict(self.module.named_parameters())
        for name, param in params.items():
            safe_set_full_fp32_param(param, weights[name].to(self.device))
        # the module's own (possibly bf16, possibly sharded) copy: under ZeRO-3 the gathered
        # parameters are written on rank 0 and re-sharded from there on leaving the context
        gathered = (deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=0)
                    if self.options.zero_stage == 3 else contextlib.nullcontext())
        with gathered, torch.no_grad():
            if self.options.zero_stage != 3 or self.is_main:
                for name, value in self.module.state_dict(keep_vars=True).items():
                    value.data.copy_(weights[name].to(value.device, value.dtype))

    def layout(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "zero_stage": self.options.zero_stage}

    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        """DeepSpeed's checkpoint (every rank writes its shards) into ``directory/ds``."""
        self.engine.save_checkpoint(str(directory), tag=TAG, client_state={"client": client_state},
                                    save_latest=False)
        if self.is_main:
            write_layout(directory, self.layout())
        fsync_tree(directory / TAG)  # mim publishes with a rename: the data must be on disk

    def load(self, directory: Path) -> dict[str, Any]:
        saved = written_layout(directory)  # the ZeRO stage and process count that wrote it
        if saved is None and (directory / STATE_FILE).is_file():
            from mim.engine.backends.deepspeed.from_torch import load_torch

            return load_torch(self, directory, TAG)
        if saved is None:
            raise ConfigError(f"backend: checkpoint {directory} was not written by "
                              "backend=deepspeed; resume with the backend that wrote it, or set "
                              "run.resume=never or another run.dir")
        # DeepSpeed reads its files with torch.load(weights_only=False) and offers no switch: its
        # optimiser states hold pickled DeepSpeed objects. These files are the ones this run's
        # own processes wrote into its own run directory, never downloaded ones.
        stages = saved["zero_stage"], self.options.zero_stage
        if saved == self.layout():
            path, client = self.engine.load_checkpoint(str(directory), tag=TAG,
                                                       load_module_strict=True)
            client = client if path is not None else None
        elif 0 in stages:  # DeepSpeed's universal checkpoint covers ZeRO 1-3 only
            raise ConfigError(
                f"backend: checkpoint {directory} holds ZeRO-{stages[0]} states of "
                f"{saved['world_size']} processes, this run has ZeRO-{stages[1]} with "
                f"{self.world_size}; DeepSpeed re-shards only between ZeRO stages 1, 2 and 3: "
                f"resume with backend.zero_stage={stages[0]} and {saved['world_size']} "
                "processes (launcher.nprocs), or set run.resume=never or another run.dir")
        else:  # another stage or process count: ZeRO cannot re-shard its files itself
            from mim.engine.backends.deepspeed.universal import load_resharded

            client = load_resharded(self.engine, directory, TAG, saved, self.is_main,
                                    self.barrier)
        if client is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {directory / TAG}")
        self.micro_step = self.engine.global_steps * self.accum_steps
        return client["client"]
