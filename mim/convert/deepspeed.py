"""Checkpoints written by ``backend=deepspeed``: DeepSpeed's own folder (``ds/`` inside a
checkpoint directory, see ``DeepSpeedBackend.save``) of per-rank model and optimizer files,
with ``mim_layout.json`` naming the ZeRO stage and the process count.

Read in this one CPU process, without a process group and without a GPU. ZeRO 1-3 keep the
fp32 master weights only as per-rank flat shards in the optimizer files; DeepSpeed's own
``zero_to_fp32`` utilities consolidate them (whatever the stage, the process count or the
optimizer offload that wrote them). ZeRO-0 shards nothing: the full weights are the module's
entry of ``mp_rank_00_model_states.pt`` (under bf16, the module's bf16 copy, widened to fp32).
Every rank's file is checked to be there before DeepSpeed reads them: its own errors name no
rank. The run's config is the ``client`` entry DeepSpeed merged into the model-states file.
The folder's file names, and how its stage and process count are found, live in
``mim/engine/backends/deepspeed/layout.py``, shared with the backend.
"""
from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from mim.convert.common import ConvertError
from mim.engine.backends.deepspeed.layout import (LAYOUT, MODEL_STATES, TAG, client_file,
                                                  deepspeed_folder, expected_files,
                                                  stage_and_world)
from mim.wording import plural

PREFIX = "model."  # DeepSpeed gets the model wrapped in TupleOutput (.model, deepspeed/wrapping.py)


def _layout(folder: Path) -> tuple[int, int]:
    """(ZeRO stage, process count) of DeepSpeed's folder, or the error saying what it holds."""
    found = stage_and_world(folder)
    if found is not None:
        return found
    held = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise ConvertError(f"{folder}: a DeepSpeed checkpoint folder without {LAYOUT} nor any "
                       f"*_model_states.pt file (found: {held})")


def _check_files(folder: Path, stage: int, world: int) -> None:
    found = f"{folder}: a DeepSpeed ZeRO-{stage} checkpoint written by {plural(world, 'rank')}"
    missing = [(what, rank, path) for what, rank, path in expected_files(folder, stage, world)
               if not path.is_file()]
    if missing:
        said = "; ".join(f"the {what} file of rank {rank} is missing ({path})"
                         for what, rank, path in missing)
        raise ConvertError(f"{found}; {said}")


def _load(path: Path) -> dict[str, Any]:
    # DeepSpeed pickles its own objects into these files (its config, the optimizer's state)
    # and reads them with weights_only=False itself; mim's readers of weights do the same only
    # here, for the files a DeepSpeed checkpoint is made of
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ConvertError(f"{path}: a DeepSpeed checkpoint file that does not read "
                           f"({str(err).splitlines()[0]})") from None


def _consolidated(folder: Path, stage: int) -> dict[str, torch.Tensor]:
    """The full fp32 weights, with the names the DeepSpeed engine's module gave them."""
    if stage == 0:
        module = _load(folder / MODEL_STATES)["module"]
        return {k: v.float() if v.is_floating_point() else v for k, v in module.items()}
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise ConvertError(f"{folder}: a DeepSpeed ZeRO-{stage} checkpoint; consolidating it "
                           "needs DeepSpeed, which is not installed: pip install "
                           "'mim-pretrain[deepspeed]'") from None

    # zero_to_fp32 prints its progress (and a tqdm bar) for a command-line user; mim's commands
    # keep stdout for their result
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
        except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
            raise ConvertError(f"{folder}: a DeepSpeed ZeRO-{stage} checkpoint DeepSpeed cannot "
                               f"consolidate: {str(err).splitlines()[0]}") from None
    return dict(state)


def _mim_names(state: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    if not state or not all(k.startswith(PREFIX) for k in state):
        raise ConvertError(f"{folder}: a DeepSpeed checkpoint whose weights are not mim's "
                           f"model (expected names under '{PREFIX}', found: {sorted(state)[:5]})")
    return {k[len(PREFIX):]: v for k, v in state.items()}


def read_deepspeed_checkpoint(folder: Path) -> dict[str, Any]:
    """``{"model": full fp32 CPU tensors (mim's names), "client": the run's client state}`` of
    a checkpoint directory holding ``ds/``, or of DeepSpeed's folder itself; the layout of
    ``backend=torch``'s ``state.pt`` as far as a reader of weights needs."""
    shards = deepspeed_folder(folder)
    if shards is None:
        raise ConvertError(f"{folder}: no DeepSpeed checkpoint folder ({TAG}/ with {LAYOUT} or "
                           "*_model_states.pt files)")
    stage, world = _layout(shards)
    _check_files(shards, stage, world)
    # DeepSpeed merges the client state into the model-states file of rank 0
    first = client_file(shards, stage)
    client = _load(first).get("client")
    if not isinstance(client, dict):
        raise ConvertError(f"{first}: a DeepSpeed checkpoint without mim's 'client' entry "
                           "(the run's config): not written by mim")
    return {"model": _mim_names(_consolidated(shards, stage), shards), "client": client}
