"""Hugging Face ``save_pretrained`` folders, and ``ViTMAEForPreTraining`` in particular.

A folder is read by the reader registered for its ``config.json`` ``model_type`` and written by
the writer registered for the tokenizer's grid rank (``HF_READERS`` / ``HF_WRITERS``): ViTMAE
here for 2D patches; a modality package adds others (the 3D cube layout is registered by a
modality plugin) without any change to this file.

Transformer layers are named as in transformers 4.x (which 5.x also reads and writes), e.g.
``encoder.layer.N.{layernorm_before, attention.attention.{query,key,value},
attention.output.dense, layernorm_after, intermediate.dense, output.dense}``; 5.x's in-memory
names (``layers.N.attention.q_proj`` / ``mlp.fc1``) are read too. q, k and v are separate
(mim fuses them, timm's layout). Some layouts keep only ``q_bias`` and ``v_bias``: a key bias only
adds a per-query constant to the attention logits, which softmax removes, so dropping mim's key
bias there changes no output.

ViTMAE: ``vit.embeddings.{cls_token, position_embeddings, patch_embeddings.projection}``,
``vit.encoder.layer.N.*``, ``vit.layernorm``, ``decoder.{decoder_embed, mask_token,
decoder_pos_embed, decoder_layers.N.*, decoder_norm, decoder_pred}``. The position tables are
MAE's sin-cos (HF rotates its own table into MAE's order); LayerNorm eps ``layer_norm_eps``
(1e-12 by default) is kept in ``model.norm_eps``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mim.convert.common import (ConvertError, Converted,
                                check_plain_tokenizer, count_blocks, decoder_table_matches,
                                described_config, encoder_table, encoder_table_for_export,
                                export_grid, fuse_qkv, split_qkv, with_overrides)
from mim.convert.card import write_card
from mim.models.keys import CLS, DECODER_TENSORS, KERNEL, KERNEL_BIAS, TABLE
from mim.convert.preprocessor import write_preprocessor
from mim.convert.provenance import run_facts
from mim.convert.storage import load_hf_weights, save_tensors, write_json
from mim.models.pos_embed import sincos_pos_embed
from mim.registry import Registry

# model_type -> reader(folder, config, state, overrides); "2d" / "3d" -> writer(conv, folder, grid)
HF_READERS = Registry("Hugging Face model type")
HF_WRITERS = Registry("Hugging Face layout for a grid rank")

# mim block part -> the names it has in Hugging Face layers (4.x first, then 5.x)
_PARTS = {"norm1": ("layernorm_before",), "norm2": ("layernorm_after",),
          "attn.proj": ("attention.output.dense", "attention.o_proj"),
          "mlp.fc1": ("intermediate.dense", "mlp.fc1"), "mlp.fc2": ("output.dense", "mlp.fc2")}
_QKV = {"q": ("attention.attention.query", "attention.q_proj"),
        "k": ("attention.attention.key", "attention.k_proj"),
        "v": ("attention.attention.value", "attention.v_proj")}
# where ViTMAE's layer stacks live: 4.x names, 5.x names, and a 5.x save quirk for the decoder
_VIT_LAYERS = ("vit.encoder.layer.", "vit.layers.")
DECODER_LAYERS = ("decoder.decoder_layers.", "decoder.decoder_encoder.layer.")


def _first(state: dict[str, torch.Tensor], prefix: str, names: tuple[str, ...],
           suffix: str) -> torch.Tensor | None:
    for name in names:
        if f"{prefix}{name}{suffix}" in state:
            return state[f"{prefix}{name}{suffix}"]
    return None


def read_layers(state: dict[str, torch.Tensor], prefixes: tuple[str, ...], dst: str,
                width: int) -> tuple[dict[str, torch.Tensor], int]:
    """Hugging Face layers under the first of ``prefixes`` found -> mim blocks under ``dst``."""
    prefix = next((p for p in prefixes if count_blocks(state, p)), prefixes[0])
    depth = count_blocks(state, prefix)
    out = {}
    for i in range(depth):
        src = f"{prefix}{i}."
        for part, names in _PARTS.items():
            for leaf in ("weight", "bias"):
                tensor = _first(state, src, names, f".{leaf}")
                if tensor is None:
                    raise ConvertError(f"missing {src}{names[0]}.{leaf}")
                out[f"{dst}{i}.{part}.{leaf}"] = tensor
        weights = [_first(state, src, _QKV[n], ".weight") for n in "qkv"]
        if any(w is None for w in weights):
            raise ConvertError(f"missing q/k/v weights under {src}")
        biases = [_first(state, src, _QKV[n], ".bias") for n in "qkv"]
        if biases[0] is None:  # q_bias and v_bias only (or no biases): the key bias is zero
            zero = torch.zeros(width)
            biases = [state.get(f"{src}attention.attention.q_bias", zero), zero,
                      state.get(f"{src}attention.attention.v_bias", zero)]
        out[f"{dst}{i}.attn.qkv.weight"] = fuse_qkv(*weights)  # [3D, D]
        out[f"{dst}{i}.attn.qkv.bias"] = fuse_qkv(*biases)  # [3D]
    return out, depth


def write_layers(state: dict[str, torch.Tensor], src: str, dst: str, depth: int,
                 qv_bias_only: bool) -> dict[str, torch.Tensor]:
    """mim blocks under ``src`` -> Hugging Face (4.x) layers under ``dst``."""
    out = {}
    for i in range(depth):
        s, d = f"{src}{i}.", f"{dst}{i}."
        for part, names in _PARTS.items():
            for leaf in ("weight", "bias"):
                out[f"{d}{names[0]}.{leaf}"] = state[f"{s}{part}.{leaf}"]
        for name, tensor in zip("qkv", split_qkv(state[f"{s}attn.qkv.weight"])):
            out[f"{d}{_QKV[name][0]}.weight"] = tensor
        q_bias, k_bias, v_bias = split_qkv(state[f"{s}attn.qkv.bias"])
        if qv_bias_only:  # the key bias is dropped: see the module docstring
            out[f"{d}attention.attention.q_bias"] = q_bias
            out[f"{d}attention.attention.v_bias"] = v_bias
        else:
            for name, tensor in zip("qkv", (q_bias, k_bias, v_bias)):
                out[f"{d}{_QKV[name][0]}.bias"] = tensor
    return out


def common_config(conv: Converted) -> dict[str, Any]:
    """``config.json`` entries every MAE-style Hugging Face model shares; ``mask_ratio`` is the
    run's where the source recorded it (ViTMAE masks at it; VideoMAE keeps it as a record)."""
    cfg = conv.config
    ratio = run_facts(conv).mask_ratio
    return {**({"mask_ratio": ratio} if ratio is not None else {}),
            "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth,
            "num_attention_heads": cfg.num_heads,
            "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio), "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02, "layer_norm_eps": cfg.norm_eps,
            "patch_size": cfg.patch_size, "num_channels": conv.in_chans, "qkv_bias": True,
            "decoder_hidden_size": cfg.decoder_embed_dim,
            "decoder_num_hidden_layers": cfg.decoder_depth,
            "decoder_num_attention_heads": cfg.decoder_num_heads,
            "decoder_intermediate_size": int(cfg.decoder_embed_dim * cfg.mlp_ratio),
            "norm_pix_loss": cfg.norm_pix_loss, "torch_dtype": "float32"}


def mlp_ratio(config: dict[str, Any], folder: Path) -> float:
    ratio = config["intermediate_size"] / config["hidden_size"]
    if abs(config["decoder_intermediate_size"] / config["decoder_hidden_size"] - ratio) > 1e-9:
        raise ConvertError(f"{folder}: decoder MLP ratio differs from the encoder's; mim's "
                           "blocks share one ratio")
    return ratio


def recorded_run(config: dict[str, Any]) -> dict[str, Any]:
    """What a Hugging Face ``config.json`` records of its run (``Converted.run``)."""
    if "mask_ratio" not in config:
        return {}
    return {"config": {"mask": {"ratio": float(config["mask_ratio"])}}}


def read_hf(folder: Path, **overrides: Any) -> Converted:
    config = json.loads((folder / "config.json").read_text())
    kind = config.get("model_type")
    if kind not in HF_READERS:
        raise ConvertError(f"{folder}: model_type '{kind}'; readable: "
                           f"{', '.join(HF_READERS.names())}")
    return HF_READERS.get(kind)(folder, config, load_hf_weights(folder), overrides)


def write_hf(conv: Converted, folder: Path, input_size: tuple[int, ...] | None = None) -> Path:
    """A ``save_pretrained`` folder in the layout registered for the model's grid rank."""
    if not conv.has_decoder:
        raise ConvertError("Hugging Face *ForPreTraining folders hold a decoder; these weights "
                           "have none")
    rank = "2d" if conv.config.tokenizer_name == "patch2d" else "3d"
    if rank not in HF_WRITERS:
        raise ConvertError(f"no Hugging Face layout registered for {rank} grids")
    grid = export_grid(conv, input_size)
    HF_WRITERS.get(rank)(conv, folder, grid)
    write_preprocessor(conv, folder, grid)
    write_card(conv, folder, "hf", grid)
    return folder


# ----------------------------------------------------------------------------------- ViTMAE
@HF_READERS.register("vit_mae")
def read_vit_mae(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor],
                 overrides: dict[str, Any]) -> Converted:
    dim, dec = config["hidden_size"], config["decoder_hidden_size"]
    size = config["image_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch = config["patch_size"]
    grid = (size[0] // patch, size[1] // patch)
    kind, table, cls = encoder_table(state["vit.embeddings.position_embeddings"], 1, grid,
                                     state["vit.embeddings.cls_token"])
    if not decoder_table_matches(state["decoder.decoder_pos_embed"], grid, "joint"):
        raise ConvertError(f"{folder}: decoder_pos_embed is not MAE's sin-cos table")
    out = {KERNEL: state["vit.embeddings.patch_embeddings.projection.weight"],
           KERNEL_BIAS: state["vit.embeddings.patch_embeddings.projection.bias"],
           CLS: cls, "norm.weight": state["vit.layernorm.weight"],
           "norm.bias": state["vit.layernorm.bias"]}
    if table is not None:
        out[TABLE] = table
    for name in DECODER_TENSORS:
        out[name] = state[f"decoder.{name}"]
    blocks, depth = read_layers(state, _VIT_LAYERS, "blocks.", dim)
    decoder, decoder_depth = read_layers(state, DECODER_LAYERS, "decoder_blocks.", dec)
    model_cfg = described_config(
        name="hf_vit_mae", tokenizer="patch2d", patch_size=patch, embed_dim=dim, depth=depth,
        num_heads=config["num_attention_heads"], mlp_ratio=mlp_ratio(config, folder),
        decoder_embed_dim=dec, decoder_depth=decoder_depth,
        decoder_num_heads=config["decoder_num_attention_heads"], cls_token=True, pos_embed=kind,
        pos_grid=list(grid) if kind == "learned" else None,
        norm_pix_loss=bool(config.get("norm_pix_loss", False)),
        norm_eps=float(config.get("layer_norm_eps", 1e-12)))
    return Converted(with_overrides(model_cfg, overrides), config.get("num_channels", 3),
                     {**out, **blocks, **decoder}, "hf-vit-mae", input_size=size,
                     run=recorded_run(config))


@HF_WRITERS.register("2d")
def write_vit_mae(conv: Converted, folder: Path, grid: tuple[int, ...]) -> Path:
    check_plain_tokenizer(conv, 2, "ViTMAE")
    s, cfg = conv.state, conv.config
    if not cfg.cls_token or cfg.pos_embed not in ("joint", "learned"):
        raise ConvertError("ViTMAE has a cls token and MAE's 2D sin-cos decoder table; this "
                           f"model has cls_token={cfg.cls_token}, pos_embed={cfg.pos_embed}")
    if grid[0] != grid[1]:
        raise ConvertError(f"ViTMAE needs a square grid, got {grid}")
    table = encoder_table_for_export(conv, grid)  # [L, D]
    out = {"vit.embeddings.patch_embeddings.projection.weight": s[KERNEL],
           "vit.embeddings.patch_embeddings.projection.bias": s[KERNEL_BIAS],
           "vit.embeddings.cls_token": s[CLS],
           "vit.embeddings.position_embeddings": torch.cat(
               [torch.zeros(1, table.shape[1]), table]).unsqueeze(0).float(),  # [1, 1 + L, D]
           "vit.layernorm.weight": s["norm.weight"], "vit.layernorm.bias": s["norm.bias"],
           "decoder.decoder_pos_embed": sincos_pos_embed(
               cfg.decoder_embed_dim, grid, num_prefix=1).unsqueeze(0)}  # [1, 1 + L, Dd]
    for name in DECODER_TENSORS:
        out[f"decoder.{name}"] = s[name]
    out.update(write_layers(s, "blocks.", "vit.encoder.layer.", cfg.depth, False))
    out.update(write_layers(s, "decoder_blocks.", DECODER_LAYERS[0], cfg.decoder_depth, False))
    config = {**common_config(conv), "architectures": ["ViTMAEForPreTraining"],
              "model_type": "vit_mae", "image_size": grid[0] * cfg.patch_size}
    save_tensors(out, folder / "model.safetensors")
    write_json(config, folder / "config.json")
    return folder
