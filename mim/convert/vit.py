"""facebookresearch/mae checkpoints and timm ``VisionTransformer`` weights (one naming family).

MAE's pretraining checkpoint is ``{"model": state, "args": Namespace, ...}`` with the encoder
named as in timm (``patch_embed.proj``, ``cls_token``, ``pos_embed`` [1, 1 + L, D] holding the
fixed sin-cos table with a zero cls row, ``blocks.N``, ``norm``) plus the decoder
(``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks.N``,
``decoder_norm``, ``decoder_pred``). Its encoder-only releases and timm's ViT weights are the
encoder part alone, possibly with ``fc_norm`` / ``head`` of a classifier, and in timm's case a
learned ``pos_embed`` whose cls row is not zero.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from mim.convert.common import (ConvertError, Converted, check_plain_tokenizer, copy_blocks,
                                count_blocks, decoder_table_matches, described_config,
                                encoder_table, encoder_table_for_export, export_grid, heads_for,
                                square_grid, with_overrides)
from mim.convert.card import write_card
from mim.models.keys import CLS, DECODER_TENSORS, KERNEL, KERNEL_BIAS, TABLE
from mim.convert.provenance import run_facts
from mim.convert.storage import save_tensors, write_json
from mim.models.model import split_state
from mim.models.pos_embed import sincos_pos_embed
from mim.models.sizes import VIT_SIZES

log = logging.getLogger("mim")

IGNORED = ("head.", "fc_norm.")  # a classifier on top of the encoder; mim keeps the encoder
HEAD_FIELDS = ("num_heads", "decoder_num_heads")  # overrides that _head_counts reads
UNSUPPORTED = ("reg_token", "norm_pre.", ".ls1.", ".ls2.", "pos_embed_spatial", "attn_pool.")


def is_vit_layout(state: dict[str, Any]) -> bool:
    return "patch_embed.proj.weight" in state


def read_vit(state: dict[str, torch.Tensor], fmt: str, args: Any = None,
             model_args: dict[str, Any] | None = None, **overrides: Any) -> Converted:
    """MAE / timm names -> mim's. ``args``: MAE's saved command line; ``model_args``: timm's
    ``config.json`` arguments (img_size, num_heads, ...); ``overrides``: ModelConfig fields."""
    _refuse_unsupported(state, fmt)
    model_args = dict(model_args or {})
    if isinstance(args, dict):  # mim's MAE exports store args as a plain dict (see write_mae)
        args = argparse.Namespace(**args)
    proj = _patch_kernel(state, fmt)  # [D, C, p, p]
    dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = count_blocks(state, "blocks.")
    decoder_depth = count_blocks(state, "decoder_blocks.")
    notes = []
    if any(k.startswith("decoder_blocks.") and "relative_position" in k for k in state):
        decoder_depth = 0  # AudioMAE's local decoder: Swin blocks with a relative position bias
        notes.append("decoder: Swin blocks with a relative position bias (AudioMAE's local "
                     "decoder) have no counterpart in mim; encoder only, the decoder starts at "
                     "random")
    grid = _token_grid(state, fmt, patch, model_args.get("img_size") or _input_size(args))
    out, kind, encoder_notes = _read_encoder(state, fmt, proj, grid, depth)
    notes += encoder_notes
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / dim if depth else 4.0
    decoder, width = _decoder(state, grid, mlp_ratio, fmt) if decoder_depth else ({}, 512)
    out.update(decoder)
    num_heads, decoder_num_heads = _head_counts(dim, width, args, model_args, overrides)
    config = described_config(
        name=str(getattr(args, "model", None) or f"{fmt}_vit"), tokenizer="patch2d",
        patch_size=patch, embed_dim=dim, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, cls_token="cls_token" in state, pos_embed=kind,
        pos_grid=list(grid) if kind == "learned" else None,
        norm_pix_loss=bool(getattr(args, "norm_pix_loss", True)),
        decoder_embed_dim=width, decoder_depth=max(decoder_depth, 1),
        decoder_num_heads=decoder_num_heads)
    rest = {k: v for k, v in overrides.items() if k not in HEAD_FIELDS}
    return Converted(with_overrides(config, rest), in_chans, out, fmt,
                     input_size=(grid[0] * patch, grid[1] * patch),
                     has_decoder=bool(decoder_depth), notes=notes + _args_notes(args),
                     run=_args_run(args))


def _input_size(args: Any) -> Any:
    """The input size MAE's saved args record: AudioMAE's (``audio_exp``) is its
    ``target_length`` frames by 128 mel bins (its ``input_size`` stays MAE's 224, unused)."""
    if getattr(args, "audio_exp", False) and getattr(args, "target_length", None):
        return [int(args.target_length), 128]
    return getattr(args, "input_size", None)


def _refuse_unsupported(state: dict[str, torch.Tensor], fmt: str) -> None:
    bad = sorted(k for k in state if any(u in k for u in UNSUPPORTED))
    if bad:
        raise ConvertError(f"{fmt} weights with {bad[0]} have no counterpart in mim's ViT "
                           "(register tokens, layer scale, pre-norm or pooling heads)")


def _patch_kernel(state: dict[str, torch.Tensor], fmt: str) -> torch.Tensor:
    proj = state["patch_embed.proj.weight"]  # [D, C, p, p]
    if proj.dim() != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ConvertError(f"{fmt}: patch_embed.proj.weight of shape {tuple(proj.shape)}; a "
                           "square 2D patch embedding [D, C, p, p] was expected")
    return proj


def _token_grid(state: dict[str, torch.Tensor], fmt: str, patch: int,
                size: int | list[int] | None) -> tuple[int, int]:
    """From the input size the file records (MAE's args, timm's config.json), else from the
    rows of a square position table."""
    if size is not None:
        side = (size, size) if isinstance(size, int) else tuple(size)
        return (side[0] // patch, side[1] // patch)
    prefix = 1 if "cls_token" in state else 0
    rows = state["pos_embed"].shape[-2] - prefix if "pos_embed" in state else 0
    return square_grid(rows, f"{fmt} pos_embed")


def _read_encoder(state: dict[str, torch.Tensor], fmt: str, proj: torch.Tensor,
                  grid: tuple[int, int], depth: int
                  ) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The encoder's tensors in mim's names, its pos_embed kind and what the reader noted."""
    dim = proj.shape[0]
    kind, table, cls = _positions(state, grid)
    out = {KERNEL: proj, KERNEL_BIAS: state.get("patch_embed.proj.bias", torch.zeros(dim))}
    if cls is not None:
        out[CLS] = cls
    if table is not None:
        out[TABLE] = table
    out.update(copy_blocks(state, "blocks.", "blocks.", depth, dim))
    norm, norm_notes = _final_norm(state, fmt)
    out.update(norm)
    table_notes = [] if table is None else [
        "learned position table (not MAE's sin-cos): kept as pos_embed=learned"]
    return out, kind, table_notes + norm_notes + _ignored_notes(state)


def _positions(state: dict[str, torch.Tensor], grid: tuple[int, int]
               ) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
    """(pos_embed kind, learned table or None, cls token) as ``encoder_table`` gives them."""
    if "pos_embed" not in state:
        return "joint", None, state.get("cls_token")
    return encoder_table(state["pos_embed"], int("cls_token" in state), grid,
                         state.get("cls_token"))


def _final_norm(state: dict[str, torch.Tensor], fmt: str
                ) -> tuple[dict[str, torch.Tensor], list[str]]:
    if "norm.weight" in state:
        return {"norm.weight": state["norm.weight"], "norm.bias": state["norm.bias"]}, []
    if "fc_norm.weight" in state:  # MAE fine-tuned with global pooling: norm after pooling
        return ({"norm.weight": state["fc_norm.weight"], "norm.bias": state["fc_norm.bias"]},
                ["no final norm (a global-pool fine-tuned checkpoint): fc_norm used as the "
                 "token norm, so features differ from the original's pooled ones"])
    raise ConvertError(f"{fmt}: neither norm.weight nor fc_norm.weight in the weights")


def _ignored_notes(state: dict[str, torch.Tensor]) -> list[str]:
    """The classifier's tensors left out (fc_norm counts as one unless it is the only norm)."""
    ignored = sorted(k for k in state if k.startswith(IGNORED) and not
                     (k.startswith("fc_norm.") and "norm.weight" not in state))
    return [f"ignored classifier weights: {', '.join(ignored)}"] if ignored else []


def _head_counts(dim: int, width: int, args: Any, model_args: dict[str, Any],
                 overrides: dict[str, Any]) -> tuple[int, int]:
    """Heads are not stored in a state dict: the caller's count, else timm's config.json or
    MAE's args, else ``heads_for``'s guess from the width (encoder, then decoder)."""
    given = overrides.get("num_heads", model_args.get("num_heads",
                                                      getattr(args, "num_heads", None)))
    decoder_given = overrides.get("decoder_num_heads", getattr(args, "decoder_num_heads", None))
    return heads_for(dim, given, "encoder"), heads_for(width, decoder_given, "decoder")


def _args_notes(args: Any) -> list[str]:
    if args is not None and not hasattr(args, "norm_pix_loss"):
        return ["MAE args without norm_pix_loss: norm-pix assumed"]
    return []


def _args_run(args: Any) -> dict[str, Any]:
    """The part of the run MAE's args record: the mask ratio."""
    ratio = getattr(args, "mask_ratio", None)
    return {"config": {"mask": {"ratio": float(ratio)}}} if ratio is not None else {}


def _decoder(state: dict[str, torch.Tensor], grid: tuple[int, int], mlp_ratio: float,
             fmt: str) -> tuple[dict[str, torch.Tensor], int]:
    """The decoder's tensors in mim's names (MAE's are mim's) and its width."""
    width = state["decoder_embed.weight"].shape[0]
    depth = count_blocks(state, "decoder_blocks.")
    ratio = state["decoder_blocks.0.mlp.fc1.weight"].shape[0] / width
    if abs(ratio - mlp_ratio) > 1e-9:
        raise ConvertError(f"{fmt}: decoder MLP ratio {ratio} differs from the encoder's "
                           f"{mlp_ratio}; mim's blocks share one ratio")
    if "decoder_pos_embed" in state and not decoder_table_matches(state["decoder_pos_embed"],
                                                                  grid, "joint"):
        raise ConvertError(f"{fmt}: decoder_pos_embed is not MAE's sin-cos table; a learned "
                           "decoder table has no counterpart in mim")
    out = {k: state[k] for k in DECODER_TENSORS}
    out.update(copy_blocks(state, "decoder_blocks.", "decoder_blocks.", depth, width))
    return out, width


# ------------------------------------------------------------------------------------- write
def _encoder_state(conv: Converted, grid: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """mim -> timm / MAE encoder names; the position table written out with a zero cls row."""
    s, cfg = conv.state, conv.config
    table = encoder_table_for_export(conv, grid)  # [L, D]
    if cfg.cls_token:
        table = torch.cat([torch.zeros(1, table.shape[1]), table])  # [1 + L, D]
    out = {"patch_embed.proj.weight": s[KERNEL], "patch_embed.proj.bias": s[KERNEL_BIAS],
           "pos_embed": table.unsqueeze(0).float(),  # [1, (1 +) L, D]
           "norm.weight": s["norm.weight"], "norm.bias": s["norm.bias"]}
    if cfg.cls_token:
        out["cls_token"] = s[CLS]
    out.update(copy_blocks(s, "blocks.", "blocks.", cfg.depth, cfg.embed_dim))
    return out


def write_mae(conv: Converted, path: Path, input_size: tuple[int, ...] | None = None) -> Path:
    """facebookresearch/mae's pretraining checkpoint ``{"model": ...}`` (a .pth file)."""
    check_plain_tokenizer(conv, 2, "an MAE checkpoint")
    cfg = conv.config
    if not cfg.cls_token or cfg.pos_embed not in ("joint", "learned"):
        raise ConvertError("an MAE checkpoint has a cls token and a 2D sin-cos decoder table; "
                           f"this model has cls_token={cfg.cls_token}, pos_embed={cfg.pos_embed}")
    grid = export_grid(conv, input_size)
    state = _encoder_state(conv, grid)
    if conv.has_decoder:
        dec_table = sincos_pos_embed(cfg.decoder_embed_dim, grid, num_prefix=1)  # [1 + L, Dd]
        state.update(split_state(conv.state)[1])  # MAE's decoder names are mim's
        state["decoder_pos_embed"] = dec_table.unsqueeze(0)
    path = path if path.suffix else path / "checkpoint.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {k: v.contiguous() for k, v in state.items()},
                "args": mae_args(conv, grid)}, path)
    write_card(conv, path.parent, "mae", grid,
               {"file": path.name, "architecture": timm_architecture(conv, grid),
                "model_args": timm_arguments(conv, grid)})
    return path


def mae_args(conv: Converted, grid: tuple[int, ...]) -> dict[str, Any]:
    """MAE's ``args`` entries that describe the weights, as a plain dict (a Namespace would
    make ``torch.load(weights_only=True)`` refuse the file outside mim); the head counts, which
    MAE's model names imply, are added so that any size reads back."""
    cfg, facts = conv.config, run_facts(conv)
    size = [n * cfg.patch_size for n in grid]
    args = {"model": cfg.name, "input_size": size[0] if size[0] == size[1] else size,
            "norm_pix_loss": cfg.norm_pix_loss, "num_heads": cfg.num_heads,
            "decoder_num_heads": cfg.decoder_num_heads}
    if facts.mask_ratio is not None:
        args["mask_ratio"] = facts.mask_ratio
    return args


def timm_architecture(conv: Converted, grid: tuple[int, ...]) -> str:
    """timm's registered ViT whose width, depth, heads, MLP ratio, patch and input size are these
    weights'; else the registered one nearest in width (``model_args`` then build the real
    one: timm needs a registered name)."""
    import timm

    cfg = conv.config
    size = next((n for n, dims in VIT_SIZES.items()
                 if dims == (cfg.embed_dim, cfg.depth, cfg.num_heads)), None)
    side = grid[0] * cfg.patch_size if grid[0] == grid[1] else None
    exact = f"vit_{size}_patch{cfg.patch_size}_{side}"
    if size and side and cfg.mlp_ratio == 4.0 and timm.is_model(exact):
        return exact
    nearest = size or min(VIT_SIZES, key=lambda n: abs(VIT_SIZES[n][0] - cfg.embed_dim))
    return next((name for name in (f"vit_{nearest}_patch{cfg.patch_size}_224",
                                   f"vit_{nearest}_patch16_224", f"vit_{nearest}_patch14_224")
                 if timm.is_model(name)), "vit_base_patch16_224")


def timm_arguments(conv: Converted, grid: tuple[int, ...]) -> dict[str, Any]:
    cfg = conv.config
    return {"img_size": [n * cfg.patch_size for n in grid], "patch_size": cfg.patch_size,
            "in_chans": conv.in_chans, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
            "num_heads": cfg.num_heads, "mlp_ratio": cfg.mlp_ratio, "qkv_bias": True,
            "class_token": cfg.cls_token, "global_pool": "token" if cfg.cls_token else "avg",
            "fc_norm": False, "num_classes": 0}


def write_timm(conv: Converted, folder: Path, input_size: tuple[int, ...] | None = None,
               mean: list[float] | None = None, std: list[float] | None = None) -> Path:
    """A timm ``VisionTransformer`` folder: ``model.safetensors`` + timm's ``config.json``.

    Load with ``timm.create_model("local-dir:<folder>", pretrained=True)``: ``architecture`` is
    timm's name for this size where it has one (``timm_architecture``), ``model_args`` the exact
    arguments, ``pretrained_cfg`` the run's input size and normalisation (``mean``/``std`` or
    the run's own). A model card ``README.md`` goes with it.
    """
    check_plain_tokenizer(conv, 2, "a timm VisionTransformer")
    grid = export_grid(conv, input_size)
    if abs(conv.config.norm_eps - 1e-6) > 1e-12:
        log.warning("timm's ViT uses LayerNorm eps 1e-6; these weights were trained with %g",
                    conv.config.norm_eps)
    args = timm_arguments(conv, grid)
    if mean is None or std is None:
        mean, std = run_facts(conv).normalisation()
    save_tensors(_encoder_state(conv, grid), folder / "model.safetensors")
    size = [conv.in_chans, *args["img_size"]]
    write_json({"architecture": timm_architecture(conv, grid), "num_classes": 0,
                "num_features": conv.config.embed_dim, "global_pool": args["global_pool"],
                "model_args": args,
                "pretrained_cfg": {"input_size": size, "fixed_input_size": True,
                                   "num_classes": 0, "classifier": "head",
                                   "mean": mean, "std": std,
                                   "interpolation": "bicubic", "crop_pct": 1.0,
                                   "first_conv": "patch_embed.proj"}},
               folder / "config.json")
    write_card(conv, folder, "timm", grid)
    return folder
