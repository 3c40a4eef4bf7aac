"""Resuming a DeepSpeed checkpoint on another ZeRO stage or process count.

ZeRO's shards fit only the stage and process count that wrote them, so such a checkpoint goes
through DeepSpeed's universal checkpoint: ``deepspeed.checkpoint.ds_to_universal`` rewrites the
shards as one folder per parameter name (fp32 weights, AdamW moments) beside the engine's state
and mim's client state, and the engine loads that on any stage and process count
(``load_universal``). Why DeepSpeed's format and not a consolidated state of mim's own: the
shards hold more than weights and moments (the engine's step counters, the schedule, the
optimiser's hyper-parameters and its partition bookkeeping for stages 1, 2 and 3 alike), and
DeepSpeed's own converter and loader restore all of it through the engine's code and follow its
format from one release to the next, where mim's own would re-implement ZeRO's partitioning.

The main rank converts in one process (``num_extract_workers=1``: no process pool inside a
training process) into a hidden folder beside the checkpoint, removed after every rank has
loaded; the checkpoint itself is left as it was. A same-shape resume never comes here. The
same folder is the interchange with ``backend=torch`` (``from_torch``, ``to_torch``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from mim.engine.backends.deepspeed.layout import UNIVERSAL_MODEL_STATES

log = logging.getLogger("mim")


def convert(shards: Path, out: Path) -> None:
    """DeepSpeed's converter on ``shards`` (one checkpoint tag) into ``out`` (written under a
    temporary name, then renamed: a folder named ``out`` is always whole)."""
    from deepspeed.checkpoint import ds_to_universal

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # inject_missing_state: mim's model declares no UNIVERSAL_CHECKPOINT_INFO (it has no tensor
    # or pipeline parallel slices to describe); the converter then records the default
    args = argparse.Namespace(input_folder=str(shards), output_folder=str(tmp),
                              num_extract_workers=1, num_merge_workers=1,
                              keep_temp_folder=False, strict=True, inject_missing_state=True)
    chatter = io.StringIO()  # the converter prints its progress; the log says it in one line
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        ds_to_universal.main(args)
    # A universal load reads the weights and moments from zero/ and, from the engine's model
    # states file, only its counters and the client state; the engine looks for that file under
    # its own stage's name, so the converted folder holds it under both (UNIVERSAL_MODEL_STATES).
    found = [tmp / n for n in UNIVERSAL_MODEL_STATES if (tmp / n).is_file()]
    for name in UNIVERSAL_MODEL_STATES:
        if found and not (tmp / name).exists():
            shutil.copy2(found[0], tmp / name)
    _both_stages(tmp / "zero")
    tmp.rename(out)


def _both_stages(zero: Path) -> None:
    """Make the converted optimiser state readable by the loaders of ZeRO-3 and of ZeRO-1/2.

    In DeepSpeed 0.19.8 the converter writes each family's own global optimiser state: from
    ZeRO-3 without ``ds_version``, without a per-parameter ``step.pt`` (the ZeRO-1/2 loader
    asserts the first and leaves AdamW without its step count) and with bare tensors where the
    ZeRO-1/2 loader reads ``{"param": tensor}`` (the ZeRO-3 one reads both); from ZeRO-1/2 without the
    ``optimizer_state_dict`` the ZeRO-3 loader takes the step and hyper-parameters from. Each gets
    what the other family wrote, from the same values.
    """
    import deepspeed
    import torch

    path = zero / "optimizer_state.pt"
    # DeepSpeed's own pickles (written a moment ago by its converter from this run's files)
    state = torch.load(path, map_location="cpu", weights_only=False)
    params = sorted(d for d in zero.iterdir() if d.is_dir())
    inner = state.get("optimizer_state_dict")
    if inner is not None:  # from ZeRO-3
        step = inner["state"][0]["step"]
    else:  # from ZeRO-1/2: every parameter has the same step
        step = torch.load(params[0] / "step.pt", map_location="cpu", weights_only=False)
    state.setdefault("ds_version", deepspeed.__version__)
    state.setdefault("optimizer_state_dict", {"state": {0: {"step": step}},
                                              "param_groups": state["param_groups"]})
    torch.save(state, path)
    for folder in params:
        if not (folder / "step.pt").exists():
            torch.save(step, folder / "step.pt")
        for key in ("fp32", "exp_avg", "exp_avg_sq"):  # ZeRO-3 writes bare tensors
            value = torch.load(folder / f"{key}.pt", map_location="cpu", weights_only=True)
            if torch.is_tensor(value):
                torch.save({"param": value}, folder / f"{key}.pt")  # checkpoint.constants.PARAM


@contextlib.contextmanager
def _universal(engine: Any):
    """The engine reading universal checkpoints for one load: the switch is the config's
    ``checkpoint.load_universal``, read by the engine at load time, and a normal resume must
    keep reading ZeRO shards."""
    config = engine._config  # the engine offers no setter; its loader reads this attribute
    before = config.load_universal_checkpoint
    config.load_universal_checkpoint = True
    try:
        yield
    finally:
        config.load_universal_checkpoint = before


def load_resharded(engine: Any, directory: Path, tag: str, saved: dict[str, Any],
                   is_main: bool, barrier: Callable[[], None]) -> dict[str, Any] | None:
    """Load checkpoint ``directory`` (DeepSpeed's files in ``directory/tag``, written with
    layout ``saved``) into ``engine`` of another layout; collective. Returns DeepSpeed's client
    state, or None when the engine found nothing."""
    out = directory.parent / f".universal-{directory.name}"
    if is_main:
        log.info("re-sharding %s (ZeRO-%s on %s ranks) with DeepSpeed's universal checkpoint",
                 directory, saved.get("zero_stage"), saved.get("world_size"))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        convert(directory / tag, out / tag)
    barrier()
    try:
        return load_universal(engine, out, tag)
    finally:
        barrier()
        if is_main:
            shutil.rmtree(out, ignore_errors=True)


def load_universal(engine: Any, out: Path, tag: str) -> dict[str, Any] | None:
    """Load the universal checkpoint ``out/tag`` into ``engine``, then repair what DeepSpeed
    0.19.8's loaders leave wrong; collective. Returns DeepSpeed's client state, or None."""
    with _universal(engine):
        path, client = engine.load_checkpoint(str(out), tag=tag, load_module_strict=True)
    _group_settings(engine, out / tag / "zero" / "optimizer_state.pt")
    _own_step_counts(engine.optimizer.optimizer)
    return client if path is not None else None


def _group_settings(engine: Any, path: Path) -> None:
    """Each AdamW parameter group's own settings as saved. DeepSpeed's ZeRO-3 universal loader
    gives every group the first group's (weight decay included), and mim's second group is the
    one without weight decay (biases, norms, tokens)."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=False)["param_groups"]
    groups = engine.optimizer.optimizer.param_groups
    if len(groups) != len(saved):
        raise RuntimeError(f"the checkpoint's optimiser has {len(saved)} parameter groups, "
                           f"this run's {len(groups)}")
    for group, settings in zip(groups, saved):
        group.update({k: v for k, v in settings.items() if k != "params"})


def _own_step_counts(optimizer: Any) -> None:
    """Give each AdamW state its own ``step`` tensor. DeepSpeed 0.19.8's ZeRO-3 universal loader
    puts one tensor object into the state of every parameter group, and torch's AdamW adds 1 to
    it in place once per group and step: with mim's two groups the count (AdamW's bias
    correction) then ran twice as fast from the resume on, and the loss curve drifted 8.9e-4
    relative from an uninterrupted run within 4 steps (1.4e-7, rounding, with its own count)."""
    import torch

    seen: set[int] = set()
    for state in optimizer.state.values():
        step = state.get("step")
        if torch.is_tensor(step):
            if id(step) in seen:
                state["step"] = step.clone()
            seen.add(id(step))
