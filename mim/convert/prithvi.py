"""Prithvi-EO checkpoints (NASA / IBM; Prithvi-EO-1.0, arXiv 2310.18660; Prithvi-EO-2.0, arXiv
2412.02732): read into mim, and written back by ``to=prithvi``.

The layout, as read in (Apache-2.0 sources, read, not copied):
IBM/terratorch at 85467a9fbbaf567e7ce4541758c09a548a7bace5, ``terratorch/models/backbones/
prithvi_mae.py`` (``PrithviViT``, ``MAEDecoder``, ``PrithviMAE``, ``get_3d_sincos_pos_embed``,
``TemporalEncoder``, ``LocationEncoder``) and ``prithvi_vit.py`` (``prithvi_cfgs``,
``checkpoint_filter_fn_mae``: how 1.0's names map onto 2.0's); NASA-IMPACT/hls-foundation-os at
465aba8968182d7f70d626510e19f9a8966e27e7, ``hls-gfm/models_mae.py`` (1.0's
``MaskedAutoencoderViT``); the ``config.json`` of ibm-nasa-geospatial/Prithvi-EO-2.0-300M at
4ffcc1c and of Prithvi-EO-1.0-100M.

Prithvi-EO-2.0 (``PrithviMAE``): ``encoder.patch_embed.proj`` a Conv3d ``[D, C, t, p, p]`` (HLS:
6 bands, t = 1, p = 16), ``encoder.cls_token`` [1, 1, D], ``encoder.pos_embed`` [1, 1 + L, D]
(a buffer: Prithvi's fixed 3D sin-cos with a zero cls row), ``encoder.blocks.N`` (timm's
``Block``: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2), ``encoder.norm``; then
``decoder.{decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.N, decoder_norm,
decoder_pred}``. Tokens are in (t, h, w) order, targets ``(s p q c)`` per cube (mim's cube
layout). LayerNorm is torch's default, eps 1e-5 (kept as ``model.norm_eps``). The TL variants
add ``encoder.temporal_embed_enc.scale`` and ``encoder.location_embed_enc.scale`` (and
``decoder.*_embed_dec.scale``): learned weights of sin-cos codes of the date and the place,
added only when those coordinates are given. mim's ``model.coords`` computes the same codes
(``mim/models/coords.py``), so they are read as its scales (``COORD_KEYS``), exactly, and
written back by ``to=prithvi``; ``drop_coords=True`` leaves them out instead (the model then
encodes as Prithvi does without coordinates, and a note says so). Prithvi-EO-1.0 has the same tensors without the
``encoder.`` / ``decoder.`` prefixes (facebookresearch/mae's names, a Conv3d kernel).

Positions. Prithvi's 3D sin-cos splits the width into sixteenths, 6 for the column, 6 for the
row, 4 for time, in that channel order (``prithvi_sincos``); mim's joint 3D table puts time
first and splits the width in thirds, so the two differ. The encoder's table is therefore read
as ``pos_embed=learned`` on its grid [T/t, H/p, W/p]: the features are exactly Prithvi's at the
size it was made for (at another size mim resizes the table, where Prithvi recomputes its
sin-cos). mim's decoder has no learned table: it adds mim's own sin-cos, so the decoder's
weights are kept but it sees other positions than Prithvi's decoder did (said in the notes).

``to=prithvi`` writes ``model.pt`` (a plain state dict in 2.0's names, ``torch.load(...,
weights_only=True)`` reads it) and a ``config.json`` in the layout of Prithvi-EO-2.0's Hugging
Face repository (``pretrained_cfg``: sizes, bands, mean, std; ``norm_eps`` added where the
weights' LayerNorm eps is not Prithvi's, for mim to read back). The position tables written are
the ones mim's model uses, so a strict ``load_state_dict`` computes mim's features and
reconstructions; terratorch's loaders (``checkpoint_filter_fn_vit`` / ``_mae``) replace both
tables with Prithvi's sin-cos, which equals the written encoder table only for weights whose
table is Prithvi's (read from Prithvi): the log and the model card say when it is not. A 2D
model is written with a ``[D, C, 1, p, p]`` kernel and ``num_frames`` 1.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from mim.convert.card import write_card
from mim.convert.common import (SINCOS_ATOL, ConvertError, Converted, copy_blocks,
                                count_blocks, decoder_table_matches, described_config,
                                encoder_table, encoder_table_for_export, export_grid, heads_for,
                                with_overrides)
from mim.convert.provenance import IMAGENET_MEAN, run_facts
from mim.convert.storage import write_json
from mim.models.keys import BLOCK_PARTS, CLS, DECODER_TENSORS, KERNEL, KERNEL_BIAS, TABLE
from mim.models.model import split_state
from mim.models.pos_embed import POS_EMBEDS, sincos_1d

log = logging.getLogger("mim")

WEIGHTS = "model.pt"  # what to=prithvi writes (Prithvi's releases: one .pt state dict)
PRITHVI_EPS = 1e-5  # torch's LayerNorm default, which Prithvi's models keep
# Prithvi's pretraining bands, HLS (L30 ids; terratorch's HLSBands names), and their names
HLS_IDS = ["B02", "B03", "B04", "B05", "B06", "B07"]
HLS_TERRATORCH = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
HLS_NAMES = ["Blue", "Green", "Red", "Narrow NIR", "SWIR 1", "SWIR 2"]
COORD_PARTS = ("temporal_embed", "location_embed")  # the TL variants' keys contain these
# terratorch's registered sizes (prithvi_cfgs): (width, depth, heads, patch) -> name
VARIANTS = {(256, 4, 4, 16): "prithvi_eo_tiny", (768, 12, 12, 16): "prithvi_eo_v2_100",
            (1024, 24, 16, 16): "prithvi_eo_v2_300", (1280, 32, 16, 14): "prithvi_eo_v2_600"}
HEAD_FIELDS = ("num_heads", "decoder_num_heads", "pos_grid")  # overrides read here


# ------------------------------------------------------------------------------- detection
def prithvi_version(state: dict[str, Any]) -> int | None:
    """2 for Prithvi-EO-2.0's names, 1 for 1.0's (MAE's names, a 5D Conv3d kernel), else None."""
    if "encoder.patch_embed.proj.weight" in state:
        return 2
    kernel = state.get("patch_embed.proj.weight")
    if torch.is_tensor(kernel) and kernel.dim() == 5:
        return 1
    return None


def is_prithvi_config(meta: Any) -> bool:
    """A ``config.json`` in the layout of Prithvi-EO's Hugging Face repositories."""
    cfg = meta.get("pretrained_cfg") if isinstance(meta, dict) else None
    return isinstance(cfg, dict) and "num_frames" in cfg and "patch_size" in cfg


def sibling_config(path: Path) -> dict[str, Any] | None:
    """The Prithvi ``config.json`` beside a weight file (a Hugging Face download), if any."""
    beside = path.parent / "config.json"
    if not beside.is_file():
        return None
    try:
        meta = json.loads(beside.read_text())
    except (OSError, ValueError):
        return None
    return meta if is_prithvi_config(meta) else None


def prithvi_sincos(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Prithvi's fixed 3D table on ``grid`` (t, h, w) -> [t*h*w, dim]: the column index on the
    first 6/16 of the channels, the row on the next 6/16, time on the last 4/16, each MAE's 1D
    sin-cos (sin half, cos half); tokens in (t, h, w) order."""
    if dim % 16:
        raise ConvertError(f"Prithvi's 3D sin-cos splits the width in sixteenths; {dim} is not "
                           "a multiple of 16")
    coords = torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij")  # each [t, h, w]
    part = dim // 16
    parts = [sincos_1d(width, coords[axis].reshape(-1))  # w, h, t: [L, 6p], [L, 6p], [L, 4p]
             for width, axis in ((6 * part, 2), (6 * part, 1), (4 * part, 0))]
    return torch.cat(parts, dim=1).float()  # [L, dim]


def _is_prithvi_table(table: torch.Tensor, grid: tuple[int, ...]) -> bool:
    """table [L, D] (no prefix rows) is Prithvi's sin-cos on ``grid``."""
    dim = table.shape[-1]
    return (not dim % 16 and table.shape[0] == math.prod(grid) and
            torch.allclose(table.float(), prithvi_sincos(dim, grid), atol=SINCOS_ATOL, rtol=0))


def _which_table(table: torch.Tensor, grid: tuple[int, ...]) -> str:
    """What a stored table [L, D] on ``grid`` is, for the notes."""
    if _is_prithvi_table(table, grid):
        return "Prithvi's fixed 3D sin-cos (width split 6:6:4 over column, row, time)"
    if grid[0] == 1 and torch.allclose(table.float(), POS_EMBEDS["joint"](table.shape[1], grid[1:]),
                                       atol=SINCOS_ATOL, rtol=0):
        return "mim's 2D sin-cos (a 2D model's export)"
    return "a table that is neither Prithvi's 3D sin-cos nor mim's"


# ------------------------------------------------------------------------------------ read
def _split(state: dict[str, torch.Tensor], version: int
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(encoder tensors, decoder tensors, other keys), the prefixes of 2.0 taken off; 1.0's
    decoder is what terratorch's filter calls one: a name with decoder or _dec, or mask_token."""
    enc, dec, other = {}, {}, []
    for key, value in state.items():
        if version == 2:
            head, _, rest = key.partition(".")
            if head == "encoder":
                enc[rest] = value
            elif head == "decoder":
                dec[rest] = value
            else:
                other.append(key)
        elif "decoder" in key or "_dec" in key or key == "mask_token":
            dec[key] = value
        else:
            enc[key] = value
    return enc, dec, other


# Prithvi-EO-2.0 TL's date and location embedding scales -> mim's (mim/models/coords.py: the
# same sin-cos codes, so the scales are all there is to carry)
COORD_KEYS = {"encoder.temporal_embed_enc.scale": "coords_embed.time_scale",
              "encoder.location_embed_enc.scale": "coords_embed.location_scale",
              "decoder.temporal_embed_dec.scale": "decoder_coords_embed.time_scale",
              "decoder.location_embed_dec.scale": "decoder_coords_embed.location_scale"}


# model.coords -> Prithvi's pretrained_cfg coords_encoding
COORD_ENCODING = {"none": [], "time": ["time"], "location": ["location"],
                  "both": ["time", "location"]}


def coords_kind(keys: set[str]) -> str:
    """model.coords of a state holding the encoder's ``keys`` of mim's names."""
    time, place = "coords_embed.time_scale" in keys, "coords_embed.location_scale" in keys
    return {(True, True): "both", (True, False): "time", (False, True): "location"}.get(
        (time, place), "none")


def _drop_coords(state: dict[str, torch.Tensor], source: Path, drop: bool
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(the state without the TL weights, those in mim's names, notes): read as model.coords,
    or with ``drop`` left out."""
    coords = sorted(k for k in state if any(part in k for part in COORD_PARTS))
    if not coords:
        return state, {}, []
    rest = {k: v for k, v in state.items() if k not in coords}
    if drop:
        return rest, {}, [f"dropped (drop_coords): {', '.join(coords)}; the model encodes as "
                          "Prithvi does without date and location coordinates"]
    unknown = [k for k in coords if k not in COORD_KEYS]
    if unknown:
        raise ConvertError(f"{source}: Prithvi TL weights {', '.join(unknown)} are not the "
                           "date and location scales mim reads; drop_coords=True reads the rest")
    mapped = {COORD_KEYS[k]: state[k].reshape(1) for k in coords}
    return rest, mapped, [f"date and location embeddings (model.coords="
                          f"{coords_kind(set(mapped))}): their scales {', '.join(coords)}; "
                          "give the data's dates and place with data.coords=true"]


def _sizes(cfg: dict[str, Any]) -> tuple[int, tuple[int, int]] | None:
    """(num_frames, (H, W)) that a Prithvi ``pretrained_cfg`` records, or None."""
    if "img_size" not in cfg:
        return None
    side = cfg["img_size"]
    hw = (int(side), int(side)) if isinstance(side, (int, float)) else tuple(int(s) for s in side)
    return int(cfg.get("num_frames", 1)), hw


def _grid(pos: torch.Tensor | None, kernel: torch.Tensor, cfg: dict[str, Any],
          hint: list[int] | None, source: Path) -> tuple[int, int, int]:
    """The token grid (T/t, H/p, W/p): from ``pos_grid=`` (the caller's), the config, else the
    one on which the stored table is Prithvi's (or mim's) sin-cos."""
    t, p = kernel.shape[2], kernel.shape[-1]
    rows = pos.shape[-2] - 1 if pos is not None else None  # the cls row off
    if hint is not None:
        grid = tuple(int(n) for n in hint)
    elif _sizes(cfg) is not None:
        frames, (height, width) = _sizes(cfg)
        if frames % t or height % p or width % p:
            raise ConvertError(f"{source}: config.json's num_frames {frames} and img_size "
                               f"{[height, width]} do not fit cubes of {[t, p, p]}")
        grid = (frames // t, height // p, width // p)
    elif rows is None:
        raise ConvertError(f"{source}: no pos_embed and no config.json to tell the input size; "
                           "pass pos_grid=[t,h,w] (the token grid)")
    else:
        table = pos.reshape(-1, pos.shape[-1])[1:]  # [L, D]
        candidates = [(n, s, s) for n in range(1, rows + 1) for s in [math.isqrt(rows // n)]
                      if rows % n == 0 and s * s * n == rows]
        fits = [g for g in candidates if _is_prithvi_table(table, g) or torch.allclose(
            table.float(), POS_EMBEDS["joint"](table.shape[1], g), atol=SINCOS_ATOL, rtol=0)]
        if len(fits) != 1:
            raise ConvertError(f"{source}: cannot tell the token grid of a {rows}-position table "
                               f"(square grids: {[list(g) for g in candidates]}); pass "
                               "pos_grid=[t,h,w] or read the folder with its config.json")
        grid = fits[0]
    if len(grid) != 3:
        raise ConvertError(f"{source}: pos_grid {list(grid)}: three axes (t, h, w) expected")
    if rows is not None and rows != math.prod(grid):
        raise ConvertError(f"{source}: pos_embed has {rows} positions besides the cls row; the "
                           f"grid {list(grid)} has {math.prod(grid)}")
    return grid


def _encoder(enc: dict[str, torch.Tensor], kernel: torch.Tensor, grid: tuple[int, ...],
             source: Path) -> tuple[dict[str, torch.Tensor], str, list[str], int]:
    """The encoder in mim's names, its pos_embed kind, notes and depth."""
    dim = kernel.shape[0]
    pos = enc.get("pos_embed")
    notes = []
    if pos is None:  # what Prithvi's loaders compute
        pos = torch.cat([torch.zeros(1, dim), prithvi_sincos(dim, grid)])
        notes.append("no pos_embed in the weights: Prithvi's 3D sin-cos of the grid, as "
                     "Prithvi's own loaders compute it")
    if "cls_token" not in enc:
        raise ConvertError(f"{source}: no cls_token; Prithvi's encoder has one")
    kind, table, cls = encoder_table(pos, 1, grid, enc["cls_token"])
    if table is not None:
        notes.append(f"encoder positions: {_which_table(table, grid)}, which mim's joint "
                     "3D table is not: kept as "
                     f"pos_embed=learned on grid {list(grid)} (exact at this size; at another "
                     "size mim resizes it where Prithvi recomputes its sin-cos)")
    depth = count_blocks(enc, "blocks.")
    out = {KERNEL: kernel, KERNEL_BIAS: enc.get("patch_embed.proj.bias", torch.zeros(dim)),
           CLS: cls, "norm.weight": _need(enc, "norm.weight", source),
           "norm.bias": _need(enc, "norm.bias", source),
           **copy_blocks(enc, "blocks.", "blocks.", depth, dim)}
    if table is not None:
        out[TABLE] = table
    return out, kind, notes, depth


def _need(part: dict[str, torch.Tensor], key: str, source: Path) -> torch.Tensor:
    if key not in part:
        raise ConvertError(f"{source}: missing {key} in the Prithvi weights")
    return part[key]


def _decoder(dec: dict[str, torch.Tensor], grid: tuple[int, ...], kind: str, mlp_ratio: float,
             source: Path) -> tuple[dict[str, torch.Tensor], list[str], int, int]:
    """The decoder in mim's names (MAE's: Prithvi's without its prefix), notes, width, depth."""
    width = dec["decoder_embed.weight"].shape[0]
    depth = count_blocks(dec, "decoder_blocks.")
    if not depth:
        raise ConvertError(f"{source}: a Prithvi decoder without decoder_blocks")
    ratio = dec["decoder_blocks.0.mlp.fc1.weight"].shape[0] / width
    if abs(ratio - mlp_ratio) > 1e-9:
        raise ConvertError(f"{source}: decoder MLP ratio {ratio} differs from the encoder's "
                           f"{mlp_ratio}; mim's blocks share one ratio")
    out = {k: _need(dec, k, source) for k in DECODER_TENSORS}
    out.update(copy_blocks(dec, "decoder_blocks.", "decoder_blocks.", depth, width))
    notes = []
    table = dec.get("decoder_pos_embed")
    mine = kind if kind in POS_EMBEDS else "joint"  # the decoder's table under ``kind``
    if table is not None and not decoder_table_matches(table, grid, mine):
        what = _which_table(table.reshape(-1, width)[1:], grid)
        notes.append(f"decoder positions: the weights' decoder_pos_embed is {what}; mim's "
                     f"decoder adds its own ({mine} sin-cos) instead, having no learned decoder "
                     "table, so its reconstructions differ from Prithvi's until it is trained on "
                     "(the encoder is exact)")
    return out, notes, width, depth


def _unused(enc: dict[str, torch.Tensor], dec: dict[str, torch.Tensor], version: int,
            depth: int, dec_depth: int, other: list[str], source: Path) -> None:
    """Every key is read or refused: nothing is dropped unsaid (named as the file names it)."""
    known_enc = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed",
                 "norm.weight", "norm.bias",
                 *(f"blocks.{i}.{p}" for i in range(depth) for p in BLOCK_PARTS)}
    known_dec = {*DECODER_TENSORS, "decoder_pos_embed",
                 *(f"decoder_blocks.{i}.{p}" for i in range(dec_depth) for p in BLOCK_PARTS)}
    left = list(other)
    for prefix, part, known in (("encoder.", enc, known_enc), ("decoder.", dec, known_dec)):
        left += [(prefix if version == 2 else "") + k for k in part if k not in known]
    if left:
        raise ConvertError(f"{source}: Prithvi weights with keys mim has no counterpart for: "
                           f"{', '.join(sorted(left)[:6])}"
                           + (f" and {len(left) - 6} more" if len(left) > 6 else ""))


def _band_names(bands: Any) -> list[str] | None:
    if not isinstance(bands, list) or not bands:
        return None
    names = [str(b) for b in bands]
    return list(HLS_NAMES) if names in (HLS_IDS, HLS_TERRATORCH) else names


def _run(cfg: dict[str, Any], in_chans: int) -> tuple[dict[str, Any], list[str]]:
    """``Converted.run`` from a ``pretrained_cfg``: the image modality's data settings it says
    (bands by name, per-band mean and std in the files' units, the frames, the size) and the
    mask ratio; nothing without a config (the weights tell only their band count)."""
    if not cfg:
        return {}, []
    data: dict[str, Any] = {"reader": "raster"}
    sizes = _sizes(cfg)
    if sizes is not None:
        frames, (height, width) = sizes
        data["time_steps"] = frames
        if height == width:
            data["input_size"] = height
    notes = []
    names = _band_names(cfg.get("bands"))
    if names is not None and len(names) == in_chans:
        data["band_names"] = names
        if names == HLS_NAMES:
            notes.append(f"bands: HLS {', '.join(f'{i} ({n})' for i, n in zip(HLS_IDS, names))},"
                         " recorded by name")
    for key in ("mean", "std"):
        values = cfg.get(key)
        if isinstance(values, list) and len(values) == in_chans:
            data[key] = [float(v) for v in values]
    tree: dict[str, Any] = {"modality": {"name": "image"}, "data": data}
    if cfg.get("mask_ratio") is not None:
        tree["mask"] = {"name": "random", "ratio": float(cfg["mask_ratio"])}
    return {"config": tree}, notes


def read_prithvi(state: dict[str, torch.Tensor], source: Path, meta: dict[str, Any] | None = None,
                 drop_coords: bool = False, **overrides: Any) -> Converted:
    """Prithvi-EO-1.0 / 2.0 weights (``meta``: the repository's ``config.json``, if any) ->
    a cube MaskedAutoencoder's. ``overrides``: ModelConfig fields; ``pos_grid=[t,h,w]`` also
    says the token grid where neither a config nor the table tells it."""
    version = prithvi_version(state)
    state, coord_state, notes = _drop_coords(state, source, drop_coords)
    enc, dec, other = _split(state, version)
    kernel = _need(enc, "patch_embed.proj.weight", source)  # [D, C, t, p, p]
    if kernel.dim() != 5 or kernel.shape[-1] != kernel.shape[-2]:
        raise ConvertError(f"{source}: patch_embed.proj.weight of shape {list(kernel.shape)}; "
                           "Prithvi's Conv3d kernel [D, C, t, p, p] was expected")
    cfg = dict((meta or {}).get("pretrained_cfg") or {})
    if "patch_size" in cfg:
        given = cfg["patch_size"]
        given = [1, given, given] if isinstance(given, int) else list(given)
        if given != list(kernel.shape[2:]):
            raise ConvertError(f"{source}: config.json's patch_size {given} is not the kernel's "
                               f"{list(kernel.shape[2:])}")
    grid = _grid(enc.get("pos_embed"), kernel, cfg, overrides.get("pos_grid"), source)
    dim, in_chans, t, p = kernel.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[-1]
    encoder, kind, pos_notes, depth = _encoder(enc, kernel, grid, source)
    mlp_ratio = encoder["blocks.0.mlp.fc1.weight"].shape[0] / dim if depth else 4.0
    decoder, dec_notes, width, dec_depth = ({}, [], int(cfg.get("decoder_embed_dim", 512)), 0)
    if "decoder_embed.weight" in dec:
        decoder, dec_notes, width, dec_depth = _decoder(dec, grid, kind, mlp_ratio, source)
    _unused(enc, dec, version, depth, dec_depth, other, source)
    heads = heads_for(dim, overrides.get("num_heads", cfg.get("num_heads")), "encoder")
    dec_heads = heads_for(width, overrides.get("decoder_num_heads",
                                               cfg.get("decoder_num_heads")), "decoder")
    config = described_config(
        name=str((meta or {}).get("architecture") or "prithvi_mae"), tokenizer="cube",
        patch_size=p, tubelet_size=t, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=mlp_ratio, cls_token=True, pos_embed=kind,
        pos_grid=list(grid) if kind == "learned" else None,
        norm_pix_loss=bool(cfg.get("norm_pix_loss", False)),
        norm_eps=float(cfg.get("norm_eps", PRITHVI_EPS)),
        decoder_embed_dim=width, decoder_depth=dec_depth or int(cfg.get("decoder_depth", 1)),
        decoder_num_heads=dec_heads, coords=coords_kind(set(coord_state)),
        coords_learn_scale=bool(cfg.get("coords_scale_learn", False)))
    run, band_notes = _run(cfg, in_chans)
    layout = ("Prithvi-EO-1.0 layout (MAE's names, a Conv3d kernel)" if version == 1 else
              "Prithvi-EO-2.0 layout (encoder. / decoder.)")
    rest = {k: v for k, v in overrides.items() if k not in HEAD_FIELDS}
    if not decoder:  # the decoder's scales go with the decoder
        coord_state = {k: v for k, v in coord_state.items() if not k.startswith("decoder")}
    return Converted(with_overrides(config, rest), in_chans,
                     {**encoder, **decoder, **coord_state}, "prithvi",
                     input_size=(grid[0] * t, grid[1] * p, grid[2] * p),
                     has_decoder=bool(decoder),
                     notes=[layout, *notes, *pos_notes, *dec_notes, *band_notes], run=run)


# ----------------------------------------------------------------------------------- write
def _check_writable(conv: Converted) -> None:
    cfg = conv.config
    if cfg.tokenizer_name not in ("patch2d", "cube"):
        raise ConvertError("Prithvi holds a plain Conv3d cube embedding (patch2d and cube models "
                           f"export); this model's tokenizer is '{cfg.tokenizer_name}'")
    if not cfg.cls_token:
        raise ConvertError("Prithvi's encoder has a cls token; this model has cls_token=False "
                           "(a token added to attention changes every feature)")
    for key, width in (("embed_dim", cfg.embed_dim), ("decoder_embed_dim", cfg.decoder_embed_dim)):
        if width % 16:
            raise ConvertError(f"Prithvi's models split the width in sixteenths for their 3D "
                               f"sin-cos; model.{key}={width} is not a multiple of 16")


def _export_bands(conv: Converted) -> list[str] | None:
    """The run's bands by name, Prithvi's HLS ids where they are its bands."""
    data = (conv.run.get("config") or {}).get("data") or {}
    names = data.get("band_names")
    if not names:
        return ["red", "green", "blue"] if conv.in_chans == 3 and data else None
    names = [names[i] for i in (data.get("bands") or range(len(names)))]
    return list(HLS_IDS) if names == HLS_NAMES else [str(n) for n in names]


def prithvi_config(conv: Converted, grid3: tuple[int, int, int], tubelet: int) -> dict[str, Any]:
    """``config.json`` as Prithvi-EO-2.0's repository has it (its ``pretrained_cfg`` keys)."""
    cfg, facts = conv.config, run_facts(conv)
    mean, std = facts.mean, facts.std
    if mean is None and conv.in_chans == len(IMAGENET_MEAN):  # pictures: ImageNet's
        mean, std = facts.normalisation()
    height, width = grid3[1] * cfg.patch_size, grid3[2] * cfg.patch_size
    variant = VARIANTS.get((cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size),
                           cfg.name if cfg.name.startswith("prithvi") else "prithvi_mae")
    pretrained = {
        "img_size": height if height == width else [height, width],
        "num_frames": grid3[0] * tubelet, "patch_size": [tubelet, cfg.patch_size, cfg.patch_size],
        "in_chans": conv.in_chans, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
        "num_heads": cfg.num_heads, "decoder_embed_dim": cfg.decoder_embed_dim,
        "decoder_depth": cfg.decoder_depth, "decoder_num_heads": cfg.decoder_num_heads,
        "mlp_ratio": cfg.mlp_ratio, "coords_encoding": COORD_ENCODING[cfg.coords],
        "coords_scale_learn": cfg.coords_learn_scale,
        **({"mask_ratio": facts.mask_ratio} if facts.mask_ratio is not None else {}),
        "norm_pix_loss": cfg.norm_pix_loss, "bands": _export_bands(conv),
        "mean": mean, "std": std,
        # not a key of Prithvi's (its models take **kwargs): mim reads back the eps trained with
        **({"norm_eps": cfg.norm_eps} if abs(cfg.norm_eps - PRITHVI_EPS) > 1e-12 else {})}
    return {"architecture": variant, "num_features": cfg.embed_dim, "pretrained_cfg": pretrained}


def write_prithvi(conv: Converted, folder: Path, input_size: tuple[int, ...] | None = None) -> Path:
    """A Prithvi-EO-2.0 folder: ``model.pt`` (encoder, and decoder where the weights have one),
    ``config.json``, the model card. See the module docstring for the position tables."""
    _check_writable(conv)
    s, cfg = conv.state, conv.config
    grid = export_grid(conv, input_size)
    flat = cfg.tokenizer_name == "patch2d"
    grid3 = (1, *grid) if flat else tuple(grid)  # [T/t, h, w]
    tubelet = 1 if flat else cfg.tubelet_size
    table = encoder_table_for_export(conv, grid)  # [L, D]
    kernel = s[KERNEL].unsqueeze(2) if flat else s[KERNEL]  # [D, C, t, p, p]
    encoder = {"patch_embed.proj.weight": kernel, "patch_embed.proj.bias": s[KERNEL_BIAS],
               "cls_token": s[CLS],
               "pos_embed": torch.cat([torch.zeros(1, table.shape[1]), table]).unsqueeze(0),
               "norm.weight": s["norm.weight"], "norm.bias": s["norm.bias"],
               **copy_blocks(s, "blocks.", "blocks.", cfg.depth, cfg.embed_dim)}
    state = {f"encoder.{k}": v for k, v in encoder.items()}
    theirs = {mine: prithvi for prithvi, mine in COORD_KEYS.items()}
    coords = {k: v for k, v in s.items() if k in theirs}  # the date and location scales
    if not conv.has_decoder:
        coords = {k: v for k, v in coords.items() if not k.startswith("decoder")}
    state.update({theirs[k]: v for k, v in coords.items()})
    notes, warn = [], []
    if not _is_prithvi_table(table.float(), grid3):
        warn.append("the encoder's position table is mim's, not Prithvi's 3D sin-cos: a strict "
                    "load_state_dict computes mim's features; terratorch's loaders replace it "
                    "with Prithvi's sin-cos, so there the features differ until fine-tuned")
    if conv.has_decoder:
        dec_table = POS_EMBEDS.get(cfg.pos_embed, POS_EMBEDS["joint"])(cfg.decoder_embed_dim,
                                                                      grid)  # [L, Dd]
        own = {k: v for k, v in split_state(s)[1].items() if k not in theirs}
        decoder = {**own, "decoder_pos_embed": torch.cat(
            [torch.zeros(1, dec_table.shape[1]), dec_table]).unsqueeze(0)}  # [1, 1 + L, Dd]
        state.update({f"decoder.{k}": v for k, v in decoder.items()})
        notes.append("decoder_pos_embed holds mim's decoder table (mim's decoder has no other); "
                     "terratorch's loaders replace it with Prithvi's 3D sin-cos")
    if abs(cfg.norm_eps - PRITHVI_EPS) > 1e-12:
        warn.append(f"Prithvi's LayerNorms use eps {PRITHVI_EPS:g}; these weights were "
                    f"trained with {cfg.norm_eps:g} (config.json's norm_eps records it)")
    for note in warn:
        log.warning("to=prithvi: %s", note)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().to("cpu").contiguous() for k, v in state.items()},
               folder / WEIGHTS)
    config = prithvi_config(conv, grid3, tubelet)
    write_json(config, folder / "config.json")
    variant = config["architecture"] if config["architecture"] in VARIANTS.values() else None
    write_card(dataclasses.replace(conv, notes=[*conv.notes, *warn, *notes]), folder, "prithvi",
               grid, {"file": WEIGHTS, "architecture": variant})
    return folder
