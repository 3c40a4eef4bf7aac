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
"""
from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from mim.convert.common import ConvertError
from mim.wording import plural
from mim.engine.ds_universal import LAYOUT, TAG

MODEL_STATES = "mp_rank_00_model_states.pt"  # ZeRO 0-2: the one model-states file (rank 0)
PREFIX = "model."  # DeepSpeed gets the model wrapped in ds_wrapping.TupleOutput (.model)


def deepspeed_folder(folder: Path) -> Path | None:
    """DeepSpeed's folder of a checkpoint directory (``ds/``), or that folder itself."""
    if (folder / TAG).is_dir():
        return folder / TAG
    if (folder / LAYOUT).is_file() or any(folder.glob("*_model_states.pt")):
        return folder
    return None


def _rank_files(folder: Path, pattern: str) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name)))


def _layout(folder: Path) -> tuple[int, int]:
    """(ZeRO stage, process count): from mim's layout file, else from the files' names."""
    if (folder / LAYOUT).is_file():
        saved = json.loads((folder / LAYOUT).read_text())
        return int(saved["zero_stage"]), int(saved["world_size"])
    model_ranks = _rank_files(folder, r"zero_pp_rank_(\d+)_mp_rank_00_model_states\.pt")
    optim_ranks = _rank_files(folder, r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt")
    if model_ranks:
        return 3, max(model_ranks) + 1
    if optim_ranks:  # ZeRO 1 and 2 write the same files; the reader treats them alike
        return 2, max(optim_ranks) + 1
    if (folder / MODEL_STATES).is_file():
        return 0, 1
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise ConvertError(f"{folder}: a DeepSpeed checkpoint folder without {LAYOUT} nor any "
                       f"*_model_states.pt file (found: {found})")


def _expected(folder: Path, stage: int, world: int) -> list[tuple[str, int, Path]]:
    """(what, rank, path) of every file the checkpoint needs."""
    if stage == 0:
        return [("model states", 0, folder / MODEL_STATES)]
    files = [("model states", 0, folder / MODEL_STATES)] if stage < 3 else []
    for rank in range(world):
        if stage == 3:
            files.append(("model states", rank,
                          folder / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"))
        optim = f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        if not (folder / optim).is_file() and (folder / f"bf16_{optim}").is_file():
            optim = f"bf16_{optim}"  # the name DeepSpeed gives it under bf16
        files.append(("optimizer states", rank, folder / optim))
    return files


def _check_files(folder: Path, stage: int, world: int) -> None:
    found = f"{folder}: a DeepSpeed ZeRO-{stage} checkpoint written by {plural(world, 'rank')}"
    missing = [(what, rank, path) for what, rank, path in _expected(folder, stage, world)
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
    first = shards / (MODEL_STATES if stage < 3 else "zero_pp_rank_0_mp_rank_00_model_states.pt")
    client = _load(first).get("client")
    if not isinstance(client, dict):
        raise ConvertError(f"{first}: a DeepSpeed checkpoint without mim's 'client' entry "
                           "(the run's config): not written by mim")
    return {"model": _mim_names(_consolidated(shards, stage), shards), "client": client}
