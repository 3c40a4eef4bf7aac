"""Checkpoints written with ``torch.distributed.checkpoint`` (DCP): ``backend=xla``'s sharded
checkpoints, a ``dcp/`` folder of shard files plus ``client.pt`` (scheduler, step and the run's
config; see ``XLABackend.save``).

Read in this one CPU process, without a process group and without torch_xla: DCP's
``.metadata`` gives every tensor's full shape and where each of its chunks lies, whatever the
sharding that wrote it (XLA SPMD, FSDP2/DTensor, one process), so DCP's own in-memory reader
(the one ``format_utils.dcp_to_torch_save`` uses) assembles full CPU tensors. Only the model's
entries are read, never the optimizer's.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mim.convert.common import ConvertError
from mim.wording import plural
from mim.engine.backends.xla.backend import CLIENT_FILE, DCP_DIR

METADATA_FILE = ".metadata"  # DCP's own name for its index of tensors and shard files
MODEL_KEY = "model"  # the entry of the saved state holding the model's state_dict


def dcp_folder(folder: Path) -> Path | None:
    """The DCP folder of a checkpoint directory (``dcp/``) or the DCP folder itself."""
    if (folder / DCP_DIR).is_dir():
        return folder / DCP_DIR
    if (folder / METADATA_FILE).is_file() and any(folder.glob("*.distcp")):
        return folder
    return None


def _check_shards(folder: Path, metadata: Any) -> None:
    """Every shard file the metadata names for the model is there and whole; else say which
    (found here, DCP's own reader would fail with an unnamed zip error)."""
    ends: dict[str, int] = {}  # file -> the end of its last entry the metadata points to
    for index, info in metadata.storage_data.items():
        if index.fqn.startswith(f"{MODEL_KEY}."):
            ends[info.relative_path] = max(ends.get(info.relative_path, 0),
                                           info.offset + info.length)
    files = {info.relative_path for info in metadata.storage_data.values()}
    # FileSystemWriter names each rank's files __{rank}_{n}.distcp
    ranks = {m.group(1) for name in files if (m := re.match(r"__(\d+)_", name))}
    found = (f"{folder}: a torch.distributed.checkpoint folder written by "
             f"{plural(len(ranks), 'rank')} ({plural(len(files), 'shard file')})")
    missing = sorted(name for name in ends if not (folder / name).is_file())
    if missing:
        raise ConvertError(f"{found}; missing: {', '.join(missing)}")
    short = sorted(f"{name} ({size} of {ends[name]} bytes)" for name in ends
                   if (size := (folder / name).stat().st_size) < ends[name])
    if short:
        raise ConvertError(f"{found}; cut short: {', '.join(short)}")


def read_dcp_model(folder: Path) -> dict[str, torch.Tensor]:
    """The model's full CPU tensors (mim's names) of a DCP folder."""
    from torch.distributed.checkpoint import CheckpointException, FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    # private, but the in-memory path of DCP's own format_utils.dcp_to_torch_save: the public
    # dcp.load fills only the keys of the state dict it is given, and here there are none yet
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    if not (folder / METADATA_FILE).is_file():
        raise ConvertError(f"{folder}: a torch.distributed.checkpoint folder without its "
                           f"{METADATA_FILE} file (written last: the save did not finish)")
    reader = FileSystemReader(folder)
    metadata = reader.read_metadata()
    _check_shards(folder, metadata)
    if not any(index.fqn.startswith(f"{MODEL_KEY}.") for index in metadata.storage_data):
        keys = sorted({index.fqn.split(".")[0] for index in metadata.storage_data})
        raise ConvertError(f"{folder}: a torch.distributed.checkpoint without '{MODEL_KEY}' "
                           f"entries (found: {', '.join(keys)})")
    state: dict[str, Any] = {}
    # the empty-state planner rebuilds the nested dict from the metadata; no_dist: this process
    # alone reads every shard, even inside a run that has a process group
    try:
        _load_state_dict(state, storage_reader=reader, no_dist=True,
                         planner=_EmptyStateDictLoadPlanner(keys={MODEL_KEY}))
    except CheckpointException as err:  # a BaseException, holding each rank's exception
        causes = {str(exc).splitlines()[0] for exc, _ in err.failures.values()}
        raise ConvertError(f"{folder}: a torch.distributed.checkpoint folder whose shards do "
                           f"not read: {'; '.join(sorted(causes))}") from None
    return state[MODEL_KEY]


def read_dcp_checkpoint(folder: Path) -> dict[str, Any]:
    """``{"model": full CPU tensors, "client": the run's client state}`` of a checkpoint
    directory holding ``dcp/`` and ``client.pt``, or of its ``dcp/`` folder; the layout of
    ``backend=torch``'s ``state.pt`` as far as a reader of weights needs."""
    shards = dcp_folder(folder)
    if shards is None:
        raise ConvertError(f"{folder}: no torch.distributed.checkpoint folder ({DCP_DIR}/ with "
                           f"{METADATA_FILE} and *.distcp files)")
    client_file = shards.parent / CLIENT_FILE
    if not client_file.is_file():
        raise ConvertError(f"{shards}: a torch.distributed.checkpoint folder without "
                           f"{client_file.name} beside it (it holds the run's config)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's notes on loading in one process without dist
        weights = read_dcp_model(shards)
    extra = torch.load(client_file, map_location="cpu", weights_only=True)
    if not isinstance(extra, dict) or not isinstance(extra.get("client"), dict):
        raise ConvertError(f"{client_file}: not backend=xla's client file (no 'client' entry)")
    return {"model": weights, "client": extra["client"]}
