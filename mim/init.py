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

import dataclasses
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


def source_bands(source: Converted) -> list[str] | None:
    """The names of the bands the weights were trained on, where their run recorded them (a
    mim run's data.band_names and data.bands; photos: red, green, blue)."""
    data = (source.run.get("config") or {}).get("data") or {}
    names = data.get("band_names")
    if not names:
        return ["red", "green", "blue"] if source.in_chans == 3 and data else None
    return [names[i] for i in (data.get("bands") or range(len(names)))]


def fit_bands(source: Converted, cfg: ModelConfig, state: dict[str, torch.Tensor],
              own: dict[str, torch.Tensor], bands: list[str] | None) -> list[str]:
    """The patch kernel of weights with other bands fitted to the run's (``bands``: their
    names), in place: mapped by name where both sides name theirs, else timm's
    ``adapt_input_conv`` (summed into one channel, or repeated and rescaled); what was done,
    for the log. ConfigError for a band of the run the weights lack (unless
    ``model.init_bands=random``)."""
    if KERNEL not in state or KERNEL not in own or state[KERNEL].shape[1] == own[KERNEL].shape[1]:
        return []
    theirs, count = source_bands(source), own[KERNEL].shape[1]
    if theirs and bands and len(bands) == count and set(bands) & set(theirs):
        missing = [b for b in bands if b not in theirs]
        if missing and cfg.init_bands != "random":
            raise ConfigError(f"model.init: the weights have no band {missing[0]} (theirs: "
                              f"{', '.join(theirs)}); model.init_bands=random starts such "
                              "bands at random")
        kernel = own[KERNEL].clone()  # [D, C_run, *k]: a missing band keeps its initialisation
        for i, band in enumerate(bands):
            if band in theirs:
                kernel[:, i] = state[KERNEL][:, theirs.index(band)]
        state[KERNEL] = kernel
        mapped = ", ".join(b for b in bands if b in theirs)
        return [f"patch kernel: bands mapped by name ({mapped})"
                + (f"; at random: {', '.join(missing)}" if missing else "")]
    if state[KERNEL].dim() != 4:
        raise ConfigError(f"model.init: the weights take {state[KERNEL].shape[1]} channels and "
                          f"name no bands; the run's {count} need a 2D patch kernel to adapt")
    from timm.models import adapt_input_conv

    old = state[KERNEL].shape[1]
    state[KERNEL] = adapt_input_conv(count, state[KERNEL])  # [D, C_run, *k]
    how = "summed into 1" if count == 1 else f"repeated into {count}"
    return [f"patch kernel: {old} channels {how} (timm's adapt_input_conv; the weights name "
            "no bands of the run)"]


def init_model(model: nn.Module, cfg: ModelConfig, resume_from: Path | None,
               bands: list[str] | None = None) -> None:
    """Load ``cfg.init`` into ``model`` (built from ``cfg``), unless the run resumes from
    ``resume_from``. ConfigError (one line) when the weights cannot be read or do not fit."""
    path = Path(cfg.init).expanduser()
    if resume_from is not None:
        log.info("model.init: not loaded: the run resumes from its checkpoint %s, which wins "
                 "over %s", resume_from, path)
        return
    source = _read(path)
    own = model.state_dict()
    state = dict(source.state)
    fitted = fit_bands(source, cfg, state, own, bands)
    if fitted:  # the decoder predicts the weights' bands: it starts afresh
        state = {k: v for k, v in state.items() if not is_decoder(k)}
    source = dataclasses.replace(source, state=state)
    state, left, misfits = fit_state(source, cfg, own)
    left = fitted + left
    misfits += _other_heads(source, cfg, state)
    if misfits:
        more = f"; and {len(misfits) - MAX_LISTED} more" if len(misfits) > MAX_LISTED else ""
        raise ConfigError(f"model.init: {path} ({source.format}) does not fit model "
                          f"{cfg.name}: {'; '.join(misfits[:MAX_LISTED])}{more}")
    model.load_state_dict(state, strict=False)  # what is absent was listed in ``left``
    parts = sorted(dict.fromkeys(_part(k) for k in own if k in state),  # the model's order,
                   key=lambda part: part == "decoder")  # the decoder last
    log.info("model.init: %s (%s) loaded: %s; not loaded: %s%s", path, source.format,
             ", ".join(parts), "; ".join(left) or "nothing",
             "".join(f"; the reader: {note}" for note in source.notes))
