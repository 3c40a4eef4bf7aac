"""SatMAE checkpoints (Cong et al. 2022, arXiv 2207.08051): the group-channel model, read onto
mim's ``group2d`` tokenizer.

Read from sustainlab-group/SatMAE at b182634c4455a847676213f69e53f5ea3abad821,
``models_mae_group_channels.py`` (``MaskedAutoencoderGroupChannelViT``), ``main_pretrain.py``
(its ``args``: ``grouped_bands``, default ((0,1,2,6),(3,4,5,7),(8,9)), ``input_size``,
``patch_size``, ``mask_ratio``, ``spatial_mask``, ``norm_pix_loss``) and
``models_mae_temporal.py``. A pretraining checkpoint is MAE's ``{"model": state, "args": ...}``.

The group-channel state: ``patch_embed.{g}.proj`` (timm's PatchEmbed, a Conv2d ``[D, n_g, p, p]``
per group g), ``cls_token``, ``pos_embed`` [1, 1 + L, D - cD] (MAE's 2D sin-cos of width D - cD;
the cls row is never used: SatMAE's encoder adds no position to the cls token), ``channel_embed``
[1, G, cD] (a 1D sin-cos of the group index), ``blocks.N`` (timm's names), ``norm``; the decoder
``decoder_embed``, ``mask_token``, ``decoder_pos_embed`` [1, 1 + L, Dd - dcD],
``decoder_channel_embed`` [1, G + 1, dcD], ``decoder_blocks.N``, ``decoder_norm`` and one
``decoder_pred.{g}`` per group. Tokens are group-major, (G, h, w): mim's group2d grid.

SatMAE concatenates rather than adds: token (g, s) is
``patch_embed_g(x_g)[s] + [pos_embed[s] | channel_embed[g]]`` (``[a | b]``: the channels of a,
then those of b). A concatenation is a sum of zero-padded parts, ``[a | b] = [a | 0] +
[0 | b]``, so the mapping is exact: group2d's ``group_embed[g]`` = ``[0 (D - cD) |
channel_embed[g]]`` and a learned spatial table (``pos_embed=learned`` on (h, w), which mim
repeats over the groups) = ``[pos_embed[s] | 0 (cD)]``. Encoder features equal SatMAE's,
masked or not.

The decoder has no such mapping: SatMAE predicts each group with its own head and gives the cls
token a position code of its own, while mim's decoder has one head and its own sin-cos positions.
It is left out (the model gets a fresh decoder of the same size) and the notes say so. SatMAE's
temporal model (``MaskedAutoencoderViT`` of ``models_mae_temporal.py``: a position table narrower
than the width, the rest a code of each image's date computed at run time) has no counterpart in
mim and is refused (``refuse_temporal``).
"""
from __future__ import annotations

from typing import Any

import torch

from mim.convert.common import (ConvertError, Converted, copy_blocks, count_blocks,
                                described_config, heads_for, square_grid, with_overrides)
from mim.models.keys import BLOCK_PARTS, CLS, TABLE
from mim.models.model import is_decoder

DEFAULT_GROUPS = [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]  # SatMAE's main_pretrain.py
HEAD_FIELDS = ("num_heads", "decoder_num_heads")
SATMAE_EPS = 1e-6  # its model factories' partial(nn.LayerNorm, eps=1e-6)


def is_satmae_group(state: dict[str, Any]) -> bool:
    return "patch_embed.0.proj.weight" in state and "channel_embed" in state


def refuse_temporal(state: dict[str, torch.Tensor], source: Any) -> None:
    """One line for SatMAE's temporal model: MAE's names with a position table narrower than
    the width (its other channels encode each image's timestamp, computed at run time)."""
    kernel, pos = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if torch.is_tensor(kernel) and torch.is_tensor(pos) and pos.shape[-1] < kernel.shape[0]:
        raise ConvertError(f"{source}: pos_embed is {pos.shape[-1]} wide for a {kernel.shape[0]}-"
                           "wide encoder: SatMAE's temporal model, whose other channels encode "
                           "each image's date at run time; mim has no counterpart for it")


def _groups(kernels: list[torch.Tensor], args: Any, overrides: dict[str, Any],
            source: Any) -> list[list[int]]:
    """The band groups: the caller's ``tokenizer.groups``, the checkpoint's ``grouped_bands``,
    else SatMAE's default; each group's band count must be its kernel's in-channels."""
    given = overrides.get("tokenizer")
    given = given.get("groups") if isinstance(given, dict) else None
    recorded = _arg(args, "grouped_bands")
    groups, said = ((given, "tokenizer.groups") if given else
                    (recorded, "the checkpoint's grouped_bands") if recorded else
                    (DEFAULT_GROUPS, "SatMAE's default grouping"))
    groups = [[int(b) for b in g] for g in groups]
    counts = [k.shape[1] for k in kernels]
    if [len(g) for g in groups] != counts:
        raise ConvertError(f"{source}: {said} {groups} does not fit the weights' patch "
                           f"embeddings, which take {counts} bands per group; pass "
                           "model.tokenizer.groups=[[...],...] (band indices per group)")
    bands = sorted(b for g in groups for b in g)
    if bands != list(range(len(bands))):
        raise ConvertError(f"{source}: {said} {groups} do not cover bands 0..{len(bands) - 1} "
                           "once each; mim's group2d encodes every band of a sample in one group")
    return groups


def read_satmae(state: dict[str, torch.Tensor], args: Any = None, source: Any = "SatMAE",
                **overrides: Any) -> Converted:
    """SatMAE group-channel weights -> a group2d MaskedAutoencoder's (encoder exact; see the
    module docstring). ``args``: SatMAE's saved command line; ``overrides``: ModelConfig
    fields (``tokenizer={"groups": ...}`` names the groups where the file does not)."""
    missing = [k for k in ("cls_token", "pos_embed", "channel_embed", "norm.weight",
                           "norm.bias") if k not in state]
    if missing:
        raise ConvertError(f"{source}: SatMAE group-channel weights without {', '.join(missing)}"
                           " (a fine-tuned classifier's? mim reads the pretrained encoder)")
    num_groups = count_blocks(state, "patch_embed.")
    kernels = [state[f"patch_embed.{g}.proj.weight"] for g in range(num_groups)]  # [D, n_g, p, p]
    dim, patch = kernels[0].shape[0], kernels[0].shape[-1]
    if any(k.dim() != 4 or k.shape[0] != dim or k.shape[-2:] != (patch, patch) for k in kernels):
        raise ConvertError(f"{source}: SatMAE's patch embeddings differ in width or patch size: "
                           f"{[list(k.shape) for k in kernels]}")
    groups = _groups(kernels, args, overrides, source)
    pos, code = state["pos_embed"], state["channel_embed"]  # [1, 1 + L, D - cD], [1, G, cD]
    if pos.shape[-1] + code.shape[-1] != dim or code.shape[-2] != num_groups:
        raise ConvertError(f"{source}: pos_embed ({pos.shape[-1]} wide) and channel_embed "
                           f"({list(code.shape)}) do not make up {num_groups} groups of width "
                           f"{dim}")
    rows = pos.shape[-2] - 1  # SatMAE's table has a cls row; its encoder never adds it
    size = _arg(args, "input_size")
    grid = (size // patch, size // patch) if size else square_grid(rows, f"{source} pos_embed")
    if grid[0] * grid[1] != rows:
        raise ConvertError(f"{source}: pos_embed has {rows} positions; input_size {size} in "
                           f"patches of {patch} makes {grid[0] * grid[1]}")
    spatial = pos.reshape(-1, pos.shape[-1])[1:].float()  # [L, D - cD]
    out = {CLS: state["cls_token"], "norm.weight": state["norm.weight"],
           "norm.bias": state["norm.bias"],
           TABLE: torch.cat([spatial, spatial.new_zeros(rows, code.shape[-1])], dim=1),  # [L, D]
           "tokenizer.group_embed": torch.cat(
               [code.new_zeros(num_groups, pos.shape[-1]), code.reshape(num_groups, -1)],
               dim=1).float()}  # [G, D]
    for g in range(num_groups):
        out[f"tokenizer.projs.{g}.weight"] = kernels[g]
        out[f"tokenizer.projs.{g}.bias"] = state.get(f"patch_embed.{g}.proj.bias",
                                                     torch.zeros(dim))
    depth = count_blocks(state, "blocks.")
    out.update(copy_blocks(state, "blocks.", "blocks.", depth, dim))
    known = {"cls_token", "pos_embed", "channel_embed", "norm.weight", "norm.bias",
             *(f"patch_embed.{g}.proj.{leaf}" for g in range(num_groups)
               for leaf in ("weight", "bias")),
             *(f"blocks.{i}.{p}" for i in range(depth) for p in BLOCK_PARTS)}
    decoder = sorted(k for k in state if is_decoder(k))
    unknown = sorted(k for k in state if k not in known and k not in decoder)
    if unknown:
        raise ConvertError(f"{source}: SatMAE weights with keys mim has no counterpart for: "
                           f"{', '.join(unknown[:6])}")
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / dim if depth else 4.0
    width = state["decoder_embed.weight"].shape[0] if "decoder_embed.weight" in state else 512
    dec_depth = count_blocks(state, "decoder_blocks.") or 8
    config = described_config(
        name=f"satmae_{_arg(args, 'model') or 'group_channel'}",
        tokenizer={"name": "group2d", "groups": groups}, patch_size=patch, embed_dim=dim,
        depth=depth, num_heads=heads_for(dim, overrides.get("num_heads"), "encoder"),
        mlp_ratio=mlp_ratio, cls_token=True, pos_embed="learned", pos_grid=list(grid),
        norm_pix_loss=bool(_arg(args, "norm_pix_loss") or False), norm_eps=SATMAE_EPS,
        decoder_embed_dim=width, decoder_depth=dec_depth,
        decoder_num_heads=heads_for(width, overrides.get("decoder_num_heads"), "decoder"))
    notes = [f"SatMAE group-channel model, groups {groups}: each group's patch embedding is "
             "group2d's; SatMAE's concatenated [position | group code] is written as the sum "
             "[position | 0] (a learned table on the spatial grid) + [0 | group code] "
             "(group_embed), which is the same vector"]
    if decoder:
        notes.append(f"decoder left out ({len(decoder)} tensors; mim builds a fresh one of its "
                     "size): SatMAE's decoder predicts each group with its own head "
                     "(decoder_pred.{g}) and gives the cls token a position code, which mim's "
                     "decoder has no counterpart for")
    ratio = _arg(args, "mask_ratio")
    run = ({"config": {"mask": {"name": "random", "ratio": float(ratio), "groups": (
        "consistent" if _arg(args, "spatial_mask") else "independent")}}}
        if ratio is not None else {})
    rest = {k: v for k, v in overrides.items() if k not in HEAD_FIELDS}
    return Converted(with_overrides(config, rest), sum(map(len, groups)), out,
                     "satmae", input_size=(grid[0] * patch, grid[1] * patch), has_decoder=False,
                     notes=notes, run=run)


def _arg(args: Any, name: str) -> Any:
    """One entry of SatMAE's saved ``args`` (a Namespace, or a dict), None where absent."""
    if isinstance(args, dict):
        return args.get(name)
    return getattr(args, name, None)
