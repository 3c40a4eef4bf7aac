"""Resuming a ``backend=torch`` checkpoint under ``backend=deepspeed`` (ZeRO stages 1-3).

The torch checkpoint (``state.pt``: the whole model, torch AdamW's ``state_dict``, the schedule,
the micro-steps) is written out as a DeepSpeed universal checkpoint, the format a re-shard
already goes through (``universal``): one folder per parameter name with its fp32 weight,
AdamW moments and step, the optimiser's group settings, and a model-states file with the
engine's counters, the schedule and mim's client state. DeepSpeed's own loader then cuts it
for this run's stage and process count, so mim writes files and never touches ZeRO's
partitions. Both backends run the same torch AdamW over the same two groups, so the state
carries over as it is: the run continues up to the rounding of another reduction order.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mim.config.errors import ConfigError
from mim.engine.backends.base import STATE_FILE
from mim.engine.backends.deepspeed.layout import UNIVERSAL_MODEL_STATES
from mim.engine.backends.deepspeed.universal import load_universal
from mim.engine.checkpoint import check_fits, load_weights_only
from mim.engine.optim import split

log = logging.getLogger("mim")


def _in_optimizer_order(module: nn.Module, model: dict[str, torch.Tensor],
                        saved_groups: list[dict]) -> list[str]:
    """The parameter names in the order of torch AdamW's ``state_dict`` indices: mim builds the
    optimiser from ``optim.param_groups``, decay group first. The split is made on the saved
    full tensors: under ZeRO-3 this run's parameters are empty placeholders."""
    named = ((name, model[name].requires_grad_(param.requires_grad))
             for name, param in module.named_parameters())
    groups = split(named)
    if [len(g) for g in groups] != [len(g["params"]) for g in saved_groups]:
        raise RuntimeError("the torch checkpoint's optimiser groups do not fit this model: "
                           f"{[len(g['params']) for g in saved_groups]} parameters per group, "
                           f"this model's {[len(g) for g in groups]}")
    return [name for group in groups for name in group]


def write_universal(state: dict[str, Any], root: nn.Module, module: nn.Module, out: Path,
                    counters: dict[str, Any]) -> None:
    """Write torch checkpoint ``state`` as a universal checkpoint into folder ``out``.

    ``root`` is the module the engine wraps (its parameter names name the folders), ``module``
    the bare model (the torch checkpoint's names); ``counters`` the engine's fields of the
    model-states file (``global_steps``, ``global_samples``, ``dp_world_size``)."""
    import deepspeed

    optim = state["optimizer"]
    # the engine names a parameter by its path in root, the torch checkpoint in module
    prefix = {id(p): name for name, p in root.named_parameters()}
    names = {name: prefix[id(p)] for name, p in module.named_parameters()}
    step = None
    zero = out / "zero"
    order = _in_optimizer_order(module, state["model"], optim["param_groups"])
    for index, name in enumerate(order):
        moments = optim["state"].get(index)
        if moments is None:  # a torch run stopped before its first step has no moments
            raise RuntimeError(f"the torch checkpoint holds no optimiser state for {name}")
        folder = zero / names[name]
        folder.mkdir(parents=True)
        values = {"fp32": state["model"][name], "exp_avg": moments["exp_avg"],
                  "exp_avg_sq": moments["exp_avg_sq"]}
        for key, value in values.items():  # {"param": ...}: checkpoint.constants.PARAM
            torch.save({"param": value.detach().float().contiguous()}, folder / f"{key}.pt")
        step = moments["step"]
        torch.save(step, folder / "step.pt")
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optim["param_groups"]]
    # the ZeRO-1/2 loader reads the groups and ds_version, the ZeRO-3 one optimizer_state_dict
    torch.save({"param_groups": settings, "ds_version": deepspeed.__version__,
                "optimizer_state_dict": {"state": {0: {"step": step}},
                                         "param_groups": settings}},
               zero / "optimizer_state.pt")
    # a universal load reads no weights from here (they come from zero/), only the counters,
    # the schedule and the client state
    model_states = {"module": {}, "mp_world_size": 1, "skipped_steps": 0,
                    "lr_scheduler": state["scheduler"], "ds_version": deepspeed.__version__,
                    "client": state["client"], **counters}
    for name in UNIVERSAL_MODEL_STATES:  # the names DeepSpeed's loaders read
        torch.save(model_states, out / name)


def load_torch(backend: Any, directory: Path, tag: str) -> dict[str, Any]:
    """Resume checkpoint ``directory`` of ``backend=torch`` into DeepSpeedBackend ``backend``
    (through a universal checkpoint beside it, removed after the load); collective. Returns
    mim's client state."""
    if backend.options.zero_stage == 0:  # DeepSpeed's universal checkpoint covers ZeRO 1-3
        raise ConfigError(f"backend: checkpoint {directory} was written by backend=torch; "
                          "backend=deepspeed resumes it with backend.zero_stage=1, 2 or 3, or "
                          "set run.resume=never or another run.dir")
    state = load_weights_only(directory / STATE_FILE)
    # the full shapes: a ZeRO-3 parameter is an empty placeholder that keeps them in ds_shape
    shapes = {name: torch.empty(getattr(value, "ds_shape", value.shape), device="meta")
              for name, value in backend.module.state_dict(keep_vars=True).items()}
    check_fits(state.get("model", {}), shapes, directory)
    out = directory.parent / f".universal-{directory.name}"
    steps = state["micro_step"] // backend.accum_steps
    if backend.is_main:
        log.info("resuming %s (backend=torch) through DeepSpeed's universal checkpoint",
                 directory)
        shutil.rmtree(out, ignore_errors=True)
        write_universal(state, backend.root, backend.module, out / tag, {
            "global_steps": steps, "dp_world_size": backend.world_size,
            "global_samples": steps * backend.engine.train_batch_size()})
    backend.barrier()
    try:
        client = load_universal(backend.engine, out, tag)
    finally:
        backend.barrier()
        if backend.is_main:
            shutil.rmtree(out, ignore_errors=True)
    if client is None:
        raise FileNotFoundError(f"no checkpoint in {out / tag}")
    backend.micro_step = backend.engine.global_steps * backend.accum_steps
    return client["client"]
