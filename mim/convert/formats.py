"""Which format a path holds, and mim's own formats (run directories, checkpoints, exports).

Detection looks at what is there, never at names alone: a directory with ``checkpoints/`` is a
mim run (its newest complete checkpoint), one with ``state.pt`` a mim checkpoint, one with
``dcp/`` a sharded one (``torch.distributed.checkpoint``, read by ``dcp.py``), one with ``ds/``
(or DeepSpeed's folder itself) one of ``backend=deepspeed`` (read by ``deepspeed.py``), one with a
``config.json`` a Hugging Face (``model_type``), Prithvi-EO (``pretrained_cfg`` with
``num_frames``: ``prithvi.py``), timm (``architecture``) or mim export (``format: mim``) folder;
a single file is read (weights only) and recognised by its keys: Prithvi-EO's (2.0's
``encoder.patch_embed.proj.weight``, 1.0's 5D ``patch_embed.proj.weight``; a Prithvi
``config.json`` beside the file is read with it), SatMAE's group-channel model
(``patch_embed.0.proj``, ``channel_embed``: ``satmae.py``), MAE's and timm's (``vit.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mim.config.migrate import current_model
from mim.engine.checkpoint import STATE_FILE
from mim.models.keys import KERNEL
from mim.convert.card import card_grid, write_card
from mim.convert.common import ConvertError, Converted, with_overrides
from mim.convert.dcp import dcp_folder, read_dcp_checkpoint
from mim.convert.deepspeed import deepspeed_folder, read_deepspeed_checkpoint
from mim.convert.hf import read_hf
from mim.convert.prithvi import is_prithvi_config, prithvi_version, read_prithvi, sibling_config
from mim.convert.provenance import checkpoint_record
from mim.convert.storage import (SAFE_SUFFIX, TORCH_SUFFIXES, load_safetensors,
                                 load_tensor_file, load_torch, save_tensors, write_json)
from mim.convert.satmae import is_satmae_group, read_satmae, refuse_temporal
from mim.convert.vit import is_vit_layout, read_vit
from mim.models.factory import ModelConfig

MIM_WEIGHTS = "model.safetensors"


def _run_sizes(tree: dict[str, Any]) -> tuple[int | None, tuple[int, ...] | None]:
    """(in_chans, spatial input size) of a run config, through its modality's data schema."""
    from mim.registry import MODALITIES, UnknownNameError

    try:
        spec = MODALITIES.get(tree["modality"]["name"])
        shape = tuple(spec.sample_shape(spec.data_config(**tree["data"])))
        return shape[0], shape[1:]
    except (KeyError, TypeError, ValueError, UnknownNameError):
        return None, None


def _model_config(tree: dict[str, Any], overrides: dict[str, Any]) -> ModelConfig:
    base = ModelConfig()
    known = {k: v for k, v in current_model(tree).items() if k in base.__dataclass_fields__}
    return with_overrides(with_overrides(base, known), overrides)


def read_mim_checkpoint(path: Path, **overrides: Any) -> Converted:
    """A training checkpoint (``state.pt`` of the torch backend) with its run config."""
    return read_mim_state(load_torch(path), path, **overrides)


def read_mim_state(state: Any, path: Path, **overrides: Any) -> Converted:
    """A checkpoint's ``{"model": weights, "client": {"config": ...}}`` read from ``path``."""
    if not isinstance(state, dict) or "model" not in state or "client" not in state:
        raise ConvertError(f"{path}: not a mim checkpoint (no 'model' and 'client' entries)")
    run = checkpoint_record(state["client"])
    tree = run["config"]
    in_chans, size = _run_sizes(tree)
    weights = state["model"]
    if in_chans is None:
        in_chans = weights[KERNEL].shape[1]
    return Converted(_model_config(tree.get("model", {}), overrides), in_chans, weights,
                     "mim", input_size=size, run=run)


def read_mim_export(folder: Path, **overrides: Any) -> Converted:
    meta = json.loads((folder / "config.json").read_text())
    return Converted(_model_config(meta["model"], overrides), int(meta["in_chans"]),
                     load_safetensors(folder / MIM_WEIGHTS), "mim",
                     input_size=tuple(meta["input_size"]) if meta.get("input_size") else None,
                     has_decoder=bool(meta.get("has_decoder", True)),
                     notes=list(meta.get("notes", [])), run=dict(meta.get("run") or {}))


def write_mim(conv: Converted, folder: Path, input_size: tuple[int, ...] | None = None) -> Path:
    """mim's export: ``model.safetensors`` (mim's names) + ``config.json`` (architecture)."""
    save_tensors(conv.state, folder / MIM_WEIGHTS)
    meta = conv.describe()
    meta.update(format="mim", source=conv.format,
                input_size=list(input_size or conv.input_size or []) or None)
    write_json(meta, folder / "config.json")
    write_card(conv, folder, "mim", card_grid(conv, input_size))
    return folder


def _latest_checkpoint(run: Path) -> Path:
    from mim.engine.checkpoint import Checkpoints

    latest = Checkpoints(run / "checkpoints").latest()
    if latest is None:
        raise ConvertError(f"{run}: a run directory without a complete checkpoint")
    return latest


def _prithvi_weights(folder: Path) -> Path:
    """The one weight file of a Prithvi folder (its releases hold a single ``.pt``)."""
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in (SAFE_SUFFIX, *TORCH_SUFFIXES))
    if len(found) != 1:
        raise ConvertError(f"{folder}: a Prithvi config.json with "
                           f"{'no weight file' if not found else 'several weight files'} beside it"
                           f"{': ' + ', '.join(p.name for p in found) if found else ''}; pass the "
                           "weight file itself")
    return found[0]


def _read_folder(folder: Path, overrides: dict[str, Any], drop_coords: bool) -> Converted:
    run = folder if (folder / "checkpoints").is_dir() else None
    if run is not None:
        folder = _latest_checkpoint(run)
    if (folder / STATE_FILE).is_file():
        return read_mim_checkpoint(folder / STATE_FILE, **overrides)
    if dcp_folder(folder) is not None:  # torch.distributed.checkpoint (backend=xla, sharded)
        return read_mim_state(read_dcp_checkpoint(folder), folder, **overrides)
    if deepspeed_folder(folder) is not None:  # backend=deepspeed: ZeRO 0-3, DeepSpeed's files
        return read_mim_state(read_deepspeed_checkpoint(folder), folder, **overrides)
    if (folder / "config.json").is_file():
        meta = json.loads((folder / "config.json").read_text())
        if meta.get("format") == "mim":
            return read_mim_export(folder, **overrides)
        if "model_type" in meta:
            return read_hf(folder, **overrides)
        if is_prithvi_config(meta):  # before timm's: Prithvi's config names an architecture too
            weights = _prithvi_weights(folder)
            return read_prithvi(_unwrap(load_tensor_file(weights), weights), weights, meta,
                                drop_coords, **overrides)
        if "architecture" in meta:  # a timm folder (save_for_hf / local-dir layout)
            weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin")
                            if (folder / n).is_file()), None)
            if weights is None:
                raise ConvertError(f"{folder}: a timm config.json without model.safetensors")
            return read_vit(_unwrap(load_tensor_file(weights), weights), "timm",
                            model_args=meta.get("model_args"), **overrides)
    if run is not None or folder.name.startswith("step_"):
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise ConvertError(f"{folder}: a mim checkpoint holding neither {STATE_FILE} "
                           "(backend=torch), dcp/ (backend=xla) nor ds/ (backend=deepspeed); "
                           f"found: {found}")
    raise ConvertError(f"{folder}: not a mim run or checkpoint, nor a Hugging Face, timm or mim "
                       "export folder (looked for checkpoints/, state.pt, dcp/, ds/, config.json)")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside common checkpoint wrappers (``model``, ``state_dict``, ``module``)."""
    for key in ("model", "state_dict", "module", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConvertError(f"{path}: found no dict of tensors (looked at the top level and under "
                           "'model', 'state_dict', 'module')")
    prefix = "module."  # saved from a DistributedDataParallel wrapper
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _read_file(path: Path, overrides: dict[str, Any], drop_coords: bool) -> Converted:
    if path.name == STATE_FILE:
        return read_mim_checkpoint(path, **overrides)
    if path.suffix not in (SAFE_SUFFIX, *TORCH_SUFFIXES):
        raise ConvertError(f"{path}: unknown weight file type '{path.suffix}'; readable: "
                           f"{SAFE_SUFFIX}, {', '.join(TORCH_SUFFIXES)}")
    raw = load_tensor_file(path)
    if isinstance(raw, dict) and "client" in raw and "model" in raw:
        return read_mim_checkpoint(path, **overrides)
    args = raw.get("args") if isinstance(raw, dict) else None
    state = _unwrap(raw, path)
    if prithvi_version(state) is not None:  # before MAE's: 1.0 has MAE's names
        return read_prithvi(state, path, sibling_config(path), drop_coords, **overrides)
    if is_satmae_group(state):
        return read_satmae(state, args, path, **overrides)
    if is_vit_layout(state):
        refuse_temporal(state, path)
        fmt = "mae" if "decoder_embed.weight" in state or args is not None else "timm"
        return read_vit(state, fmt, args=args, **overrides)
    if any(".embeddings.patch_embeddings." in k for k in state):
        raise ConvertError(f"{path}: Hugging Face weights; pass the save_pretrained folder "
                           "(with its config.json) instead of the weight file")
    raise ConvertError(f"{path}: unrecognised layout (first keys: {sorted(state)[:5]}); "
                       "readable: mim, facebookresearch/mae, timm ViT, Prithvi-EO, SatMAE "
                       "group-channel, Hugging Face folders")


def read_weights(path: str | Path, drop_coords: bool = False, **overrides: Any) -> Converted:
    """Any supported weights -> ``Converted`` (mim names + architecture). ``overrides`` set
    ModelConfig fields the file cannot tell (``num_heads``, ``norm_pix_loss``, ...).
    ``drop_coords``: read Prithvi-EO TL weights without their date and location embeddings
    (refused otherwise; ``prithvi.py``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConvertError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_folder(path, overrides, drop_coords)
    return _read_file(path, overrides, drop_coords)
