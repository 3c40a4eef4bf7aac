"""DeepSpeed's checkpoint folder as mim writes it: the one place that knows its file names.

``DeepSpeedBackend.save`` has the engine write into ``<checkpoint directory>/ds/`` (``TAG``,
always given to DeepSpeed by name: no ``latest`` file is written, none is read) and adds
``mim_layout.json`` (``LAYOUT``: the ZeRO stage and the process count). DeepSpeed names its own
files by rank (its ``checkpoint.constants``):

- ``mp_rank_00_model_states.pt`` (ZeRO 0-2): the engine's counters, the schedule, mim's client
  state and, under ZeRO-0, the whole module;
- ``zero_pp_rank_N_mp_rank_00_model_states.pt`` (ZeRO-3): one per rank, rank 0's with the
  counters and the client state;
- ``zero_pp_rank_N_mp_rank_00_optim_states.pt`` (ZeRO 1-3; ``bf16_`` in front under bf16): each
  rank's shard of the fp32 master weights and the optimiser state.

Read by the backend (which layout to resume), ``universal``, ``from_torch`` and ``to_torch``
(the universal checkpoint's model-states file) and ``mim/convert/deepspeed.py`` (weights in one
CPU process, its files checked first). Nothing here imports DeepSpeed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TAG = "ds"  # DeepSpeed's sub-folder inside a mim checkpoint directory (its checkpoint tag)
LAYOUT = "mim_layout.json"  # beside DeepSpeed's files: the ZeRO stage and process count
MODEL_STATES = "mp_rank_00_model_states.pt"  # ZeRO 0-2: the one model-states file (rank 0)
_MODEL_RANK = re.compile(r"zero_pp_rank_(\d+)_mp_rank_00_model_states\.pt")
_OPTIM_RANK = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt")


def model_states(rank: int) -> str:
    """ZeRO-3's model-states file of ``rank``."""
    return f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"


def optim_states(rank: int) -> str:
    """The optimiser-states file of ``rank`` (ZeRO 1-3; under bf16 with ``bf16_`` in front)."""
    return f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


# A universal checkpoint's model-states file, under both names: DeepSpeed's loader looks for it
# under its own stage's name (ZeRO-3: rank 0's zero_pp_rank_0_..., else mp_rank_00_...).
UNIVERSAL_MODEL_STATES = (model_states(0), MODEL_STATES)


def written_layout(directory: Path) -> dict[str, Any] | None:
    """The ZeRO stage and process count that wrote checkpoint ``directory``
    (``{"world_size", "zero_stage"}``), or None when ``backend=deepspeed`` did not write it."""
    return read_layout(directory / TAG)


def read_layout(shards: Path) -> dict[str, Any] | None:
    """mim's layout file in DeepSpeed's folder ``shards``, or None where there is none."""
    path = shards / LAYOUT
    return json.loads(path.read_text()) if path.is_file() else None


def write_layout(directory: Path, layout: dict[str, Any]) -> None:
    """Record ``layout`` beside DeepSpeed's files in checkpoint ``directory``."""
    (directory / TAG / LAYOUT).write_text(json.dumps(layout) + "\n")


def deepspeed_folder(folder: Path) -> Path | None:
    """DeepSpeed's folder of a checkpoint directory (``ds/``), or that folder itself."""
    if (folder / TAG).is_dir():
        return folder / TAG
    if (folder / LAYOUT).is_file() or any(folder.glob("*_model_states.pt")):
        return folder
    return None


def _ranks(shards: Path, pattern: re.Pattern) -> list[int]:
    return sorted(int(m.group(1)) for p in shards.iterdir() if (m := pattern.fullmatch(p.name)))


def stage_and_world(shards: Path) -> tuple[int, int] | None:
    """(ZeRO stage, process count) of DeepSpeed's folder ``shards``: from mim's layout file,
    else from the files' names; None where neither says."""
    saved = read_layout(shards)
    if saved is not None:
        return int(saved["zero_stage"]), int(saved["world_size"])
    model_ranks, optim_ranks = _ranks(shards, _MODEL_RANK), _ranks(shards, _OPTIM_RANK)
    if model_ranks:
        return 3, max(model_ranks) + 1
    if optim_ranks:  # ZeRO 1 and 2 write the same files; the readers treat them alike
        return 2, max(optim_ranks) + 1
    if (shards / MODEL_STATES).is_file():
        return 0, 1
    return None


def expected_files(shards: Path, stage: int, world: int) -> list[tuple[str, int, Path]]:
    """(what, rank, path) of every file a checkpoint of ``stage`` on ``world`` ranks needs."""
    if stage == 0:
        return [("model states", 0, shards / MODEL_STATES)]
    files = [("model states", 0, shards / MODEL_STATES)] if stage < 3 else []
    for rank in range(world):
        if stage == 3:
            files.append(("model states", rank, shards / model_states(rank)))
        optim = optim_states(rank)
        if not (shards / optim).is_file() and (shards / f"bf16_{optim}").is_file():
            optim = f"bf16_{optim}"  # the name DeepSpeed gives it under bf16
        files.append(("optimizer states", rank, shards / optim))
    return files


def client_file(shards: Path, stage: int) -> Path:
    """The model-states file DeepSpeed merges the client state into: rank 0's."""
    return shards / (MODEL_STATES if stage < 3 else model_states(0))
