"""``model.init=PATH``: a new pretraining run that starts from existing weights.

Any weights ``mim convert`` reads (``mim.convert.read_weights``) are brought to the run's model
before the backend places it: the patch kernel and a learned position table go through the
transfer code (``mim/eval/transfer.py``: resized for another patch size or grid, inflated over
the tubelet for image weights in a video model), then every tensor is checked against the
model's own shape, and a misfit is one ``ConfigError`` line listing the keys and both shapes.
Optional parts are loaded when the weights have them and fit: the decoder (whole or not at all;
not at all when the patch geometry changed, since ``decoder_pred`` is sized by the patch) and
the cls token. Only weights are read: the optimiser, schedule and step start fresh, and the
run's attention heads are used for all it loads (a state dict stores none; the weights' own,
where their format records them, never stop a run).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mim.config.errors import ConfigError
from mim.convert import ConvertError, Converted, read_weights
from mim.eval.transfer import fit_patch_kernel, fit_pos_table
from mim.factory import ModelConfig
from mim.model import is_decoder

log = logging.getLogger("mim")

KERNEL, TABLE, CLS = "tokenizer.proj.weight", "learned_pos_embed.table", "cls_token"
MAX_LISTED = 8  # misfits named in the one-line error; the rest are counted
# Head counts shape no tensor: the run's model, built with the run's, takes the weights. The
# weights are read with one head per part, a count every width takes, so that neither the
# run's counts are imposed on the weights' widths (a decoder left out, or absent, has its own)
# nor a count the file cannot tell stops the run.
TENSORS_ONLY = {"num_heads": 1, "decoder_num_heads": 1}


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


def init_model(model: nn.Module, cfg: ModelConfig, resume_from: Path | None) -> None:
    """Load ``cfg.init`` into ``model`` (built from ``cfg``), unless the run resumes from
    ``resume_from``. ConfigError (one line) when the weights cannot be read or do not fit."""
    path = Path(cfg.init).expanduser()
    if resume_from is not None:
        log.info("model.init: not loaded: the run resumes from its checkpoint %s, which wins "
                 "over %s", resume_from, path)
        return
    try:
        source = read_weights(path, **TENSORS_ONLY)
    except ConvertError as exc:
        raise ConfigError(f"model.init: {exc}") from None
    own = model.state_dict()
    state, left, misfits = fit_state(source, cfg, own)
    if misfits:
        more = f"; and {len(misfits) - MAX_LISTED} more" if len(misfits) > MAX_LISTED else ""
        raise ConfigError(f"model.init: {path} ({source.format}) does not fit model "
                          f"{cfg.name}: {'; '.join(misfits[:MAX_LISTED])}{more}")
    model.load_state_dict(state, strict=False)  # what is absent was listed in ``left``
    parts = sorted(dict.fromkeys(_part(k) for k in own if k in state),  # the model's order,
                   key=lambda part: part == "decoder")  # the decoder last
    log.info("model.init: %s (%s) loaded: %s; not loaded: %s", path, source.format,
             ", ".join(parts), "; ".join(left) or "nothing")
