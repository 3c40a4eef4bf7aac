"""Reading and writing weight files without ever running code from them.

``torch.load`` is always called with ``weights_only=True``: the unpickler then builds only
tensors, plain containers and an allow-list of classes, so a checkpoint carrying a code payload
(``__reduce__`` -> ``os.system``) is refused instead of executed. The allow-list adds one class,
``argparse.Namespace``, because facebookresearch/mae stores its command line (``args``) in every
training checkpoint; the unpickler fills its ``__dict__`` and calls nothing. ``.safetensors``
files hold tensors only and are preferred for everything this package writes.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mim.convert.common import ConvertError
from mim.engine.checkpoint import is_torch_file, refusal_reason

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
SAFE_SUFFIX = ".safetensors"


def load_torch(path: Path) -> Any:
    """``torch.load`` that refuses anything but tensors, containers and ``argparse.Namespace``."""
    try:
        if is_torch_file(path):
            return _load_allowing_args(path)
    except pickle.UnpicklingError as exc:
        raise ConvertError(f"{path}: refused to unpickle it (it holds objects other than "
                           "tensors, and loading never runs code from a file): "
                           f"{refusal_reason(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ConvertError(f"{path}: not a readable torch file ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]})") from None
    raise ConvertError(f"{path}: not a torch file (it begins as neither the zip archive nor "
                       "the pickle that torch.save writes)")


def _load_allowing_args(path: Path) -> Any:
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: the global list
        torch.serialization.add_safe_globals([argparse.Namespace])
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise ConvertError(f"{path}: not a readable .safetensors file ({exc})") from None


def load_tensor_file(path: Path) -> Any:
    """One weight file by its suffix: safetensors, or a (weights-only) torch pickle."""
    if path.suffix == SAFE_SUFFIX:
        return load_safetensors(path)
    return load_torch(path)


def load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a ``save_pretrained`` folder: one or several (sharded) files."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_tensor_file(folder / name)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_tensor_file(folder / shard))
            return state
    raise ConvertError(f"{folder}: no model.safetensors, pytorch_model.bin or shard index")


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write contiguous CPU copies as safetensors, atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
