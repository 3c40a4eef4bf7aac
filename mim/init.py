"""``model.init=PATH``: a new pretraining run that starts from existing weights.

Any weights ``mim convert`` reads (``mim.convert.read_weights``) are brought to the run's model
before the backend places it: the patch kernel and a learned position table go through the
transfer code (``mim/models/transfer.py``: resized for another patch size or grid, inflated over
the tubelet for image weights in a video model), then every tensor is checked against the
model's own shape, and a misfit is one ``ConfigError`` line listing the keys and both shapes.
Optional parts are loaded when the weights have them and fit: the decoder (whole or not at all;
not at all when the patch geometry changed, since ``decoder_pred`` is sized by the patch) and
the cls token. Only weights are read: the optimiser, schedule and step start fresh. Heads are
not tensors: weights without a decoder (or whose decoder is left out) impose nothing on the
run's; a part loaded from a format that records its heads (mim, Hugging Face) runs with them,
and a run with other counts is told the setting to follow.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mim.models.keys import CLS, KERNEL, TABLE
from mim.config.errors import ConfigError
from mim.convert import ConvertError, Converted, read_weights
from mim.models.transfer import fit_patch_kernel, fit_pos_table
from mim.models.factory import ModelConfig
from mim.models.model import is_decoder

log = logging.getLogger("mim")

MAX_LISTED = 8  # misfits named in the one-line error; the rest are counted
# Head counts shape no tensor: the weights are read with their own (recorded, or the ViT
# sizes' known counts), or, where a file cannot tell them, with one head per part, a count
# every width takes; the run's counts are never imposed on the weights' widths.
TENSORS_ONLY = {"num_heads": 1, "decoder_num_heads": 1}
RECORDED_HEADS = ("mim", "hf-")  # formats whose files say which heads their weights have


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _part(key: str) -> str:
    """The part of the model a state key belongs to, as the log names it."""
    return "decoder" if is_decoder(key) else key.split(".")[0]


def fit_state(source: Converted, cfg: ModelConfig, own: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(the state to load, what is left out and why, the misfits) for a model of ``cfg`` whose
    state dict is ``own``."""
    state, left, misfits = dict(source.state), [], []
    src = source.config
    # the weights' grid rank: their learned table's, else their patch kernel's
    rank = (len(src.pos_grid) if src.pos_grid else
            state[KERNEL].dim() - 2 if KERNEL in state else len(cfg.pos_grid or ()))
    geometry = False  # the patch kernel was resized or inflated
    if (KERNEL in state and KERNEL in own and state[KERNEL].shape[:2] == own[KERNEL].shape[:2]
            and state[KERNEL].dim() <= own[KERNEL].dim()):
        geometry = tuple(state[KERNEL].shape[2:]) != tuple(own[KERNEL].shape[2:])
        state[KERNEL] = fit_patch_kernel(state[KERNEL], tuple(own[KERNEL].shape[2:]))
    if TABLE in own:
        try:
            state[TABLE] = fit_pos_table(src.pos_embed, state.get(TABLE), src.pos_grid, rank,
                                         tuple(cfg.pos_grid), own[TABLE].shape[1])
        except ValueError as exc:  # a 3D table for a 2D model
            misfits.append(f"{TABLE}: {exc}")
    elif TABLE in state:
        grid = ",".join(map(str, src.pos_grid or []))
        misfits.append(f"{TABLE} {_shape(state.pop(TABLE))} (learned positions: set "
                       f"model.pos_embed=learned model.pos_grid=[{grid}])")
    elif geometry or src.pos_embed != cfg.pos_embed:  # fixed tables are computed, not stored
        left.append(f"positions: the model's own {cfg.pos_embed} table on its grid (the "
                    f"weights': {src.pos_embed} on theirs)")
    if CLS in state and CLS not in own:
        del state[CLS]
        left.append("cls_token (model.cls_token=false)")
    elif CLS in own and CLS not in state:
        left.append("cls_token at its initialisation (the weights have none)")
    decoder = [k for k in state if is_decoder(k)]
    if not decoder:
        left.append("decoder at its initialisation (the weights have none)")
    elif geometry:
        for k in decoder:
            del state[k]
        left.append("decoder at its initialisation (the patch geometry changed)")
    for key, value in state.items():
        if key not in own:
            misfits.append(f"{key} {_shape(value)} (not in the model)")
        elif value.shape != own[key].shape:
            misfits.append(f"{key} {_shape(value)} vs the model's {_shape(own[key])}")
    optional = {CLS} | ({k for k in own if is_decoder(k)} if not any(map(is_decoder, state))
                        else set())
    misfits += [f"{k} {_shape(own[k])} (missing from the weights)" for k in own
                if k not in state and k not in optional]
    return state, left, misfits


def _read(path: Path) -> Converted:
    """The weights at ``path``; where their format cannot tell a head count (an unusual width
    in a file that records none), read for their tensors alone (``TENSORS_ONLY``)."""
    try:
        return read_weights(path)
    except ConvertError:
        pass
    try:
        return read_weights(path, **TENSORS_ONLY)
    except ConvertError as exc:
        raise ConfigError(f"model.init: {exc}") from None


def _other_heads(source: Converted, cfg: ModelConfig, state: dict[str, torch.Tensor]
                 ) -> list[str]:
    """A part loaded from weights whose format records the heads they were trained with
    (mim's config, Hugging Face's ``config.json``) runs with those heads: the run's other
    count, a misfit naming the setting to follow them."""
    if not source.format.startswith(RECORDED_HEADS):
        return []
    parts = [("num_heads", "encoder", any(k.startswith("blocks.") for k in state))]
    parts.append(("decoder_num_heads", "decoder", any(map(is_decoder, state))))
    return [f"its {part} was trained with {getattr(source.config, key)} heads ({source.format} "
            f"records it): set model.{key}={getattr(source.config, key)} (the run has "
            f"{getattr(cfg, key)})" for key, part, loaded in parts
            if loaded and getattr(source.config, key) != getattr(cfg, key)]


def init_model(model: nn.Module, cfg: ModelConfig, resume_from: Path | None) -> None:
    """Load ``cfg.init`` into ``model`` (built from ``cfg``), unless the run resumes from
    ``resume_from``. ConfigError (one line) when the weights cannot be read or do not fit."""
    path = Path(cfg.init).expanduser()
    if resume_from is not None:
        log.info("model.init: not loaded: the run resumes from its checkpoint %s, which wins "
                 "over %s", resume_from, path)
        return
    source = _read(path)
    own = model.state_dict()
    state, left, misfits = fit_state(source, cfg, own)
    misfits += _other_heads(source, cfg, state)
    if misfits:
        more = f"; and {len(misfits) - MAX_LISTED} more" if len(misfits) > MAX_LISTED else ""
        raise ConfigError(f"model.init: {path} ({source.format}) does not fit model "
                          f"{cfg.name}: {'; '.join(misfits[:MAX_LISTED])}{more}")
    model.load_state_dict(state, strict=False)  # what is absent was listed in ``left``
    parts = sorted(dict.fromkeys(_part(k) for k in own if k in state),  # the model's order,
                   key=lambda part: part == "decoder")  # the decoder last
    log.info("model.init: %s (%s) loaded: %s; not loaded: %s", path, source.format,
             ", ".join(parts), "; ".join(left) or "nothing")
