"""``to=monai``: the encoder as MONAI's ``ViT``, the backbone of its ``UNETR`` (``UNETR.vit``).

The layout, as read in MONAI 1.6.1 (Apache-2.0; read, not copied): ``monai/networks/nets/vit.py``
(``ViT``), ``blocks/patchembedding.py`` (``PatchEmbeddingBlock``), ``blocks/transformerblock.py``,
``blocks/selfattention.py`` (``SABlock``), ``blocks/mlp.py`` (``MLPBlock``),
``nets/unetr.py`` (``UNETR``). Names (``ViT(..., proj_type="conv", qkv_bias=True)``):
``patch_embedding.patch_embeddings`` the Conv2d / Conv3d (mim's ``tokenizer.proj``, same kernel
axes), ``patch_embedding.position_embeddings`` [1, L, D] (a parameter; the default
``pos_embed_type="learnable"``), ``blocks.N.{norm1, attn.qkv, attn.out_proj, norm2,
mlp.linear1, mlp.linear2}`` and ``blocks.N.norm_cross_attn`` (built in every block, used only
with cross attention: written as the identity LayerNorm), ``norm``. ``SABlock`` splits its
fused qkv as ``"b h (qkv l d) -> qkv b l h d"`` (``l`` the heads): rows [q; k; v], each head
by head, timm's order, so ``attn.qkv`` is copied as it is. GELU (erf) as in mim's blocks.

What differs, and what this writer does about it:
- No cls token (``classification=False``, as UNETR builds it): a model with one loses it, said in
  the log and the notes (its patch tokens attended to it, so MONAI's features are not mim's).
- LayerNorm eps: MONAI's are torch's default 1e-5 and its constructors take none; mim's
  (``model.norm_eps``, 1e-6 from MAE / timm) is said on the card, with the loop that sets it.
- Position table: mim's sin-cos (or learned) table on the export's grid, written into the
  position parameter (a fixed size: MONAI's ViT takes inputs of ``img_size`` only).
- ``UNETR`` fixes 12 blocks, 16-pixel (voxel) patches on every axis and ``img_size`` divisible
  by 16; the card gives its constructor only for weights that fit.
- Refused: tokenizers with no plain Conv embedding (hybrid MCMAE, group2d / channel2d /
  spectral2d), cubes over time (video, raster time series: not a spatial volume), an MLP width
  that is not a whole number. Date and location embeddings (``model.coords``) are left out: the
  export encodes as mim does without coordinates.

Volumes: mim's cubes run over the axes of its volume modality, [C, D, H, W] = a NIfTI
reoriented to RAS and transposed to (S, A, R) (``modalities/volume/dataset.py``); the weights
keep that axis order (the card says how to get it from MONAI's RAS-oriented [C, R, A, S]).

Written: ``model.pt`` (a plain state dict, ``torch.load(..., weights_only=True)``),
``config.json`` (``ViT``'s constructor arguments: ``ViT(**config)``), the model card with the
exact ``ViT(...)`` and ``UNETR(...)`` calls. mim does not read this folder back (``to=mim``
or ``to=timm`` keep a readable copy).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch

from mim.convert.card import write_card
from mim.convert.common import ConvertError, Converted, encoder_table_for_export, export_grid
from mim.convert.provenance import run_facts
from mim.convert.storage import write_json
from mim.models.keys import BLOCK_PARTS, KERNEL, KERNEL_BIAS

log = logging.getLogger("mim")

WEIGHTS = "model.pt"
CONFIG = "config.json"
MONAI_EPS = 1e-5  # torch's LayerNorm default, which every LayerNorm of MONAI's ViT keeps
UNETR_DEPTH, UNETR_PATCH = 12, 16  # what UNETR builds its ViT with, whatever it is given
SPATIAL_CUBES = ("volume",)  # the modalities whose cube axes are all spatial
# mim's block parts -> MONAI's (the rest of a block's names are the same)
BLOCK_NAMES = {"attn.proj.": "attn.out_proj.", "mlp.fc1.": "mlp.linear1.",
               "mlp.fc2.": "mlp.linear2."}


def _monai_name(part: str) -> str:
    for mine, theirs in BLOCK_NAMES.items():
        if part.startswith(mine):
            return theirs + part[len(mine):]
    return part


def check_writable(conv: Converted) -> None:
    """One ``ConvertError`` line for what MONAI's ViT cannot hold."""
    cfg = conv.config
    tokenizer = cfg.tokenizer_name
    if tokenizer not in ("patch2d", "cube"):
        raise ConvertError("MONAI's ViT embeds plain patches with one Conv2d / Conv3d (patch2d "
                           f"and cube models export); this model's tokenizer is '{tokenizer}'")
    modality = run_facts(conv).modality
    if tokenizer == "cube" and modality not in SPATIAL_CUBES:
        what = (f"the {modality} modality's cubes run over time" if modality else
                "the weights do not record the volume modality, so their cubes may run over "
                "time")
        raise ConvertError(f"MONAI's 3D ViT takes spatial volumes; {what} (cube models of "
                           "modality=volume export)")
    width = cfg.embed_dim * cfg.mlp_ratio
    if abs(width - round(width)) > 1e-9:
        raise ConvertError(f"MONAI's ViT takes a whole mlp_dim; embed_dim {cfg.embed_dim} x "
                           f"mlp_ratio {cfg.mlp_ratio:g} is {width:g}")


def monai_arguments(conv: Converted, grid: tuple[int, ...]) -> dict[str, Any]:
    """``ViT``'s constructor arguments for these weights on ``grid`` (``config.json``)."""
    cfg = conv.config
    flat = cfg.tokenizer_name == "patch2d"
    patch = [cfg.patch_size] * 2 if flat else [cfg.tubelet_size, cfg.patch_size, cfg.patch_size]
    return {"in_channels": conv.in_chans, "img_size": [n * p for n, p in zip(grid, patch)],
            "patch_size": patch, "hidden_size": cfg.embed_dim,
            "mlp_dim": int(round(cfg.embed_dim * cfg.mlp_ratio)), "num_layers": cfg.depth,
            "num_heads": cfg.num_heads, "spatial_dims": len(patch), "proj_type": "conv",
            "qkv_bias": True}


def fits_unetr(args: dict[str, Any]) -> bool:
    """UNETR builds ``ViT(num_layers=12, patch_size=16)`` and reshapes its tokens to
    ``img_size / 16``: only such weights load into ``UNETR(...).vit``."""
    return (args["num_layers"] == UNETR_DEPTH and
            all(p == UNETR_PATCH for p in args["patch_size"]))


def monai_state(conv: Converted, grid: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """mim's encoder -> ``ViT``'s names; the position table on ``grid``, no cls token."""
    s, cfg = conv.state, conv.config
    dim = cfg.embed_dim
    table = encoder_table_for_export(conv, grid)  # [L, D]
    out = {"patch_embedding.position_embeddings": table.reshape(1, -1, dim).float(),
           "patch_embedding.patch_embeddings.weight": s[KERNEL],
           "patch_embedding.patch_embeddings.bias": s[KERNEL_BIAS]}
    for i in range(cfg.depth):
        for part in BLOCK_PARTS:
            key = f"blocks.{i}.{part}"
            if key not in s:
                if part != "attn.qkv.bias":
                    raise ConvertError(f"missing {key}")
                out[f"blocks.{i}.{part}"] = torch.zeros(3 * dim)  # qkv_bias=False: the same map
                continue
            out[f"blocks.{i}.{_monai_name(part)}"] = s[key]
        # built in every block of MONAI >= 1.4, used only with cross attention: the identity
        out[f"blocks.{i}.norm_cross_attn.weight"] = torch.ones(dim)
        out[f"blocks.{i}.norm_cross_attn.bias"] = torch.zeros(dim)
    out["norm.weight"], out["norm.bias"] = s["norm.weight"], s["norm.bias"]
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def _dropped(conv: Converted) -> list[str]:
    """What MONAI's ViT has no place for, each said once (logged and on the card)."""
    cfg, lines = conv.config, []
    if cfg.cls_token:
        lines.append("the cls token is dropped: MONAI's ViT has none (classification=False, "
                     "as UNETR builds it); mim's patch tokens attended to it, so MONAI's "
                     "features differ from mim's until fine-tuned")
    if cfg.coords != "none":
        lines.append(f"the date and location embeddings (model.coords={cfg.coords}) are left "
                     "out: MONAI's ViT takes no coordinates; it encodes as mim does without them")
    return lines


def eps_note(eps: float) -> str:
    """What MONAI's LayerNorm eps changes for weights trained with ``eps``."""
    if abs(eps - MONAI_EPS) <= 1e-12:
        return f"LayerNorm eps: MONAI's {MONAI_EPS:g} is the one these weights were trained with"
    near = math.sqrt((1 + eps) / (1 + MONAI_EPS))
    small = math.sqrt((0.01 + eps) / (0.01 + MONAI_EPS))
    return (f"LayerNorm eps: these weights were trained with {eps:g}, MONAI's ViT builds every "
            f"LayerNorm with {MONAI_EPS:g} and takes no eps argument; as built, each norm's "
            f"output is scaled by sqrt((v + {eps:g}) / (v + {MONAI_EPS:g})) for an input of "
            f"variance v ({near:.7f} at v = 1, {small:.5f} at v = 0.01), so features differ "
            f"slightly from mim's; setting `eps = {eps:g}` on every `torch.nn.LayerNorm` after "
            "building (the card's loop) gives mim's")


def write_monai(conv: Converted, folder: Path, input_size: tuple[int, ...] | None = None) -> Path:
    """A MONAI folder: ``model.pt`` (``ViT`` / ``UNETR.vit`` names), ``config.json`` (``ViT``'s
    arguments), the model card. See the module docstring for what changes."""
    check_writable(conv)
    grid = export_grid(conv, input_size)
    args = monai_arguments(conv, grid)
    state = monai_state(conv, grid)
    dropped = _dropped(conv)
    for line in dropped:
        log.warning("to=monai: %s", line)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / WEIGHTS)
    write_json(args, folder / CONFIG)
    notes = [*dropped, eps_note(conv.config.norm_eps)]
    if not fits_unetr(args):
        notes.append(f"UNETR builds its ViT with {UNETR_DEPTH} blocks and {UNETR_PATCH}-wide "
                     f"patches on every axis; these weights ({args['num_layers']} blocks, "
                     f"patches {args['patch_size']}) load into ViT(...) only")
    write_card(dataclasses.replace(conv, notes=[*conv.notes, *notes]), folder, "monai", grid,
               {"file": WEIGHTS, "args": args, "unetr": fits_unetr(args),
                "eps": conv.config.norm_eps})
    return folder
