"""Resuming a ``backend=deepspeed`` checkpoint (ZeRO stages 1-3) under ``backend=torch``.

DeepSpeed's converter (``universal``: ``ds_to_universal``) gathers the shards into one folder
per parameter name with its fp32 weight, AdamW moments and step, beside the optimiser's group
settings and the model-states file (the engine's counters, the schedule, mim's client state);
this module reads that into the state ``backend=torch`` saves (``state.pt``: the model, torch
AdamW's ``state_dict``, the schedule, the micro-steps). Both backends run the same torch AdamW
over the same two groups, so nothing is recomputed: the run continues up to the rounding of
another reduction order. ZeRO-0 writes no universal-convertible shards (refused by the caller).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mim.config.errors import ConfigError
from mim.engine.backends.deepspeed.layout import MODEL_STATES, TAG
from mim.engine.backends.deepspeed.universal import convert
from mim.engine.optim import split


def _read(folder: Path, key: str) -> torch.Tensor:
    # DeepSpeed's own pickles, written a moment ago by its converter from this run's files
    value = torch.load(folder / f"{key}.pt", map_location="cpu", weights_only=False)
    return value["param"] if isinstance(value, dict) else value  # checkpoint.constants.PARAM


def _state(out: Path, module: nn.Module, accum_steps: int) -> dict[str, Any]:
    """The torch backend's state from the universal checkpoint ``out``."""
    # the engine wrapped the model in a root module (wrapping.TupleOutput: "model.")
    zero = out / "zero"
    model = module.state_dict()
    for name, param in module.named_parameters():
        model[name] = _read(zero / f"model.{name}", "fp32").reshape(param.shape).clone()
    groups = split(module.named_parameters())
    saved = torch.load(zero / "optimizer_state.pt", map_location="cpu", weights_only=False)
    state, param_groups, index = {}, [], 0
    for names, settings in zip(groups, saved["param_groups"]):
        for name in names:
            folder = zero / f"model.{name}"
            shape = model[name].shape
            state[index] = {"step": _read(folder, "step").clone(),
                            "exp_avg": _read(folder, "exp_avg").reshape(shape).clone(),
                            "exp_avg_sq": _read(folder, "exp_avg_sq").reshape(shape).clone()}
            index += 1
        first = index - len(names)
        param_groups.append({**{k: v for k, v in settings.items() if k != "params"},
                             "params": list(range(first, index))})
    engine = torch.load(out / MODEL_STATES, map_location="cpu", weights_only=False)
    return {"model": model, "optimizer": {"state": state, "param_groups": param_groups},
            "scheduler": engine["lr_scheduler"],
            "micro_step": engine["global_steps"] * accum_steps, "client": engine["client"]}


def load_deepspeed(directory: Path, module: nn.Module, accum_steps: int, is_main: bool,
                   barrier: Callable[[], None]) -> dict[str, Any]:
    """The torch backend's state from DeepSpeed checkpoint ``directory`` (converted beside it,
    removed after every rank has read it); collective."""
    if importlib.util.find_spec("deepspeed") is None:  # its converter reads the shards
        raise ConfigError(f"backend: checkpoint {directory} was written by backend=deepspeed; "
                          "resuming it needs DeepSpeed: pip install 'mim-pretrain[deepspeed]'")
    out = directory.parent / f".universal-{directory.name}"
    if is_main:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        convert(directory / TAG, out / TAG)
    barrier()
    try:
        return _state(out / TAG, module, accum_steps)
    finally:
        barrier()
        if is_main:
            shutil.rmtree(out, ignore_errors=True)
