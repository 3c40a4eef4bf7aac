"""Hugging Face ``VideoMAEForPreTraining`` folders, registered with mim's weight converters.

Layout (transformers 4.x names, read and written by 5.x as well):
``videomae.embeddings.patch_embeddings.projection`` (Conv3d, tubelet x p x p), layers
``videomae.encoder.layer.N.*`` with ``query`` / ``key`` / ``value`` weights and only ``q_bias`` /
``v_bias`` (no key bias), ``videomae.layernorm`` (present with ``use_mean_pooling=false``, the
pretraining layout; mim's encoder always ends with a norm), ``encoder_to_decoder`` (no bias),
``mask_token``, ``decoder.decoder_layers.N.*``, ``decoder.norm``, ``decoder.head``. No cls
token; positions are the Transformer's 1D sin-cos table over the flattened (t, h, w) grid, which
mim calls ``pos_embed=flat``. Input clips are [B, T, C, H, W] in transformers, [B, C, T, H, W] in
mim.

Known differences, kept as notes on the converted weights: VideoMAE's norm-pix target
normalises each channel of a cube separately after undoing the ImageNet normalisation (mim's
target normalises the patch of the input as given), and its decoder norm keeps LayerNorm's
default eps 1e-5 (mim uses ``layer_norm_eps`` everywhere).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mim.models.keys import KERNEL, KERNEL_BIAS, MASK_TOKEN
from mim.convert.common import ConvertError, Converted, check_plain_tokenizer, with_overrides
from mim.convert.hf import (DECODER_LAYERS, HF_READERS, HF_WRITERS, common_config, mlp_ratio,
                            read_layers, recorded_run, write_layers)
from mim.convert.storage import save_tensors, write_json
from mim.models.factory import ModelConfig

log = logging.getLogger("mim")
ENCODER_LAYERS = ("videomae.encoder.layer.", "videomae.layers.")
VIDEOMAE_LAYOUT = {"pos_embed": "the flattened 1D sin-cos table (model.pos_embed=flat)",
                   "cls_token": "no cls token"}


@HF_READERS.register("videomae")
def read_videomae(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor],
                  overrides: dict[str, Any]) -> Converted:
    if "videomae.layernorm.weight" not in state:
        raise ConvertError(f"{folder}: VideoMAE with use_mean_pooling=true has no encoder norm "
                           "before its decoder; mim's encoder always ends with one")
    dim, dec = config["hidden_size"], config["decoder_hidden_size"]
    size = config["image_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch, tubelet = config["patch_size"], config["tubelet_size"]
    out = {KERNEL: state["videomae.embeddings.patch_embeddings.projection.weight"],
           KERNEL_BIAS: state["videomae.embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["videomae.layernorm.weight"],
           "norm.bias": state["videomae.layernorm.bias"], MASK_TOKEN: state["mask_token"],
           "decoder_embed.weight": state["encoder_to_decoder.weight"],
           "decoder_embed.bias": torch.zeros(dec),
           "decoder_norm.weight": state["decoder.norm.weight"],
           "decoder_norm.bias": state["decoder.norm.bias"],
           "decoder_pred.weight": state["decoder.head.weight"],
           "decoder_pred.bias": state["decoder.head.bias"]}
    blocks, depth = read_layers(state, ENCODER_LAYERS, "blocks.", dim)
    decoder, decoder_depth = read_layers(state, DECODER_LAYERS, "decoder_blocks.", dec)
    notes = ["VideoMAE's decoder norm has eps 1e-5; mim uses layer_norm_eps for all norms"]
    if config.get("norm_pix_loss", True):
        notes.append("VideoMAE's norm-pix target normalises each channel of a cube separately "
                     "after undoing the ImageNet normalisation; mim normalises the whole patch")
    model_cfg = ModelConfig(
        name="hf_videomae", tokenizer="cube", patch_size=patch, tubelet_size=tubelet,
        embed_dim=dim, depth=depth, num_heads=config["num_attention_heads"],
        mlp_ratio=mlp_ratio(config, folder), decoder_embed_dim=dec, decoder_depth=decoder_depth,
        decoder_num_heads=config["decoder_num_attention_heads"], cls_token=False,
        pos_embed="flat", norm_pix_loss=bool(config.get("norm_pix_loss", True)),
        norm_eps=float(config.get("layer_norm_eps", 1e-12)))
    return Converted(with_overrides(model_cfg, overrides), config.get("num_channels", 3),
                     {**out, **blocks, **decoder}, "hf-videomae",
                     input_size=(config["num_frames"], *size), notes=notes,
                     run=recorded_run(config))


@HF_WRITERS.register("3d")
def write_videomae(conv: Converted, folder: Path, grid: tuple[int, ...]) -> Path:
    check_plain_tokenizer(conv, 3, "VideoMAE")
    s, cfg = conv.state, conv.config
    differs = {key: (have, want) for key, have, want in
               (("pos_embed", cfg.pos_embed, "flat"), ("cls_token", cfg.cls_token, False))
               if have != want}
    if differs:  # name only what differs from VideoMAE's layout
        raise ConvertError(
            "VideoMAE holds " + " and ".join(VIDEOMAE_LAYOUT[k] for k in differs) +
            "; this model has " + ", ".join(f"model.{k}={str(v[0]).lower()}"
                                            for k, v in differs.items()) +
            " (pretrain with " + " ".join(f"model.{k}={str(v[1]).lower()}"
                                          for k, v in differs.items()) +
            " to export to VideoMAE)")
    if grid[1] != grid[2]:
        raise ConvertError(f"VideoMAE needs square frames, got a grid of {grid}")
    if s["decoder_embed.bias"].abs().max() > 0:
        log.warning("VideoMAE's encoder_to_decoder has no bias: mim's decoder_embed bias is "
                    "dropped, which changes the reconstruction (not the encoder)")
    out = {"videomae.embeddings.patch_embeddings.projection.weight": s[KERNEL],
           "videomae.embeddings.patch_embeddings.projection.bias": s[KERNEL_BIAS],
           "videomae.layernorm.weight": s["norm.weight"],
           "videomae.layernorm.bias": s["norm.bias"],
           "encoder_to_decoder.weight": s["decoder_embed.weight"], "mask_token": s["mask_token"],
           "decoder.norm.weight": s["decoder_norm.weight"],
           "decoder.norm.bias": s["decoder_norm.bias"],
           "decoder.head.weight": s["decoder_pred.weight"],
           "decoder.head.bias": s["decoder_pred.bias"]}
    out.update(write_layers(s, "blocks.", ENCODER_LAYERS[0], cfg.depth, True))
    out.update(write_layers(s, "decoder_blocks.", DECODER_LAYERS[0], cfg.decoder_depth, True))
    config = {**common_config(conv), "architectures": ["VideoMAEForPreTraining"],
              "model_type": "videomae", "image_size": grid[1] * cfg.patch_size,
              "num_frames": grid[0] * cfg.tubelet_size, "tubelet_size": cfg.tubelet_size,
              "use_mean_pooling": False}
    save_tensors(out, folder / "model.safetensors")
    write_json(config, folder / "config.json")
    return folder
