"""What every format converter shares: the result type, errors, and the tensor surgery.

mim's own state-dict names are the reference: ``tokenizer.proj.*`` (the patch or cube
convolution), ``cls_token`` [1, 1, D], ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}`` (timm's Block: fused q/k/v), ``norm``, ``decoder_embed``, ``mask_token``,
``decoder_blocks.N.*``, ``decoder_norm``, ``decoder_pred``; position tables are not weights
unless ``pos_embed=learned`` (``learned_pos_embed.table`` [L, D]).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mim.models.keys import BLOCK_PARTS, TABLE
from mim.models.factory import ModelConfig, build_model, with_changes
from mim.models.model import is_decoder
from mim.models.pos_embed import POS_EMBEDS, sincos_pos_embed

# widths of the ViT sizes and their head counts (Ti/S/B/L/H; MAE's decoder: 512 -> 16)
KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 512: 16}
SINCOS_ATOL = 1e-5  # a stored table this close to mim's sin-cos table is that table


class ConvertError(ValueError):
    """A file that cannot be read or converted; the message says which and why."""


@dataclass
class Converted:
    """Weights in mim's layout, with the architecture they need."""

    config: ModelConfig
    in_chans: int
    state: dict[str, torch.Tensor]
    format: str  # mim | mae | timm | hf-<model_type>
    input_size: tuple[int, ...] | None = None  # spatial size the weights were made for
    has_decoder: bool = True
    notes: list[str] = field(default_factory=list)
    # what is known of the run that made the weights, JSON only: {"config": the run's config
    # tree (or the parts a foreign format records, e.g. {"mask": {"ratio": ...}}), "loop":
    # {"step", "samples", ...}, "history": its starts and resumes (mim checkpoints that have
    # one)}; exports write it into their configs and model card (convert/card.py)
    run: dict[str, Any] = field(default_factory=dict)

    def build(self) -> torch.nn.Module:
        """A MaskedAutoencoder holding these weights (a fresh decoder if the file had none)."""
        model = build_model(self.config, self.in_chans)
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        missing = [k for k in missing if self.has_decoder or not is_decoder(k)]
        if missing or unexpected:
            raise ConvertError(f"{self.format} weights do not fit the model they describe: "
                               f"missing {missing[:6]}, unexpected {unexpected[:6]}")
        return model

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "in_chans": self.in_chans,
                "input_size": list(self.input_size) if self.input_size else None,
                "has_decoder": self.has_decoder, "model": asdict(self.config),
                "notes": self.notes, "run": self.run}


def heads_for(width: int, given: int | None, what: str) -> int:
    """Attention heads are not stored in a state dict: the caller's value, a known ViT size,
    or 64-wide heads."""
    if given is not None:
        return given
    if width in KNOWN_HEADS:
        return KNOWN_HEADS[width]
    if width % 64 == 0:
        return width // 64
    raise ConvertError(f"cannot tell the number of attention heads of a {width}-wide {what}; "
                       f"pass {'num_heads' if what == 'encoder' else 'decoder_num_heads'}=N")


def square_grid(rows: int, what: str) -> tuple[int, int]:
    side = math.isqrt(rows)
    if side * side != rows:
        raise ConvertError(f"{what} has {rows} positions, not a square grid; pass input_size=")
    return (side, side)


def count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of blocks ``prefix<N>.`` in ``state``."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    ids = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if ids and ids != set(range(len(ids))):
        raise ConvertError(f"blocks under '{prefix}' are not numbered 0..N-1: {sorted(ids)}")
    return len(ids)


def copy_blocks(state: dict[str, torch.Tensor], src: str, dst: str, depth: int,
                dim: int) -> dict[str, torch.Tensor]:
    """timm-named blocks ``src<N>.*`` of ``state`` -> ``dst<N>.*`` (a missing qkv bias, as
    timm's ``qkv_bias=False`` leaves it, becomes the zero bias: the same map)."""
    out = {}
    for i in range(depth):
        for part in BLOCK_PARTS:
            key = f"{src}{i}.{part}"
            if key in state:
                out[f"{dst}{i}.{part}"] = state[key]
            elif part == "attn.qkv.bias":
                out[f"{dst}{i}.{part}"] = torch.zeros(3 * dim)
            else:
                raise ConvertError(f"missing {key}")
    return out


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Separate projections (Hugging Face) -> timm's fused qkv: rows [q; k; v]."""
    return torch.cat([q, k, v], dim=0)  # [3D, ...]


def split_qkv(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = qkv.chunk(3, dim=0)  # each [D, ...]
    return q, k, v


def encoder_table(pos: torch.Tensor, num_prefix: int, grid: tuple[int, ...],
                  cls: torch.Tensor | None) -> tuple[str, torch.Tensor | None, torch.Tensor | None]:
    """A stored encoder table [(prefix +) L, D] -> (pos_embed kind, learned table or None,
    cls token with the table's prefix row folded in).

    mim adds no position to the cls token; a table whose cls row is not zero (timm's learned
    tables) is equivalent to a cls token of ``cls + row``, exactly.
    """
    pos = pos.reshape(-1, pos.shape[-1]).float()  # [(prefix +) L, D]
    prefix_rows = pos.shape[0] - math.prod(grid)
    if prefix_rows not in (0, num_prefix):
        raise ConvertError(f"position table has {pos.shape[0]} rows; the grid {grid} with "
                           f"{num_prefix} prefix token(s) needs {math.prod(grid)} or "
                           f"{math.prod(grid) + num_prefix}")
    if cls is not None and prefix_rows:
        cls = cls + pos[:1].reshape(cls.shape)  # [1, 1, D]
    table = pos[prefix_rows:]  # [L, D]
    fixed = sincos_pos_embed(table.shape[1], grid)
    if torch.allclose(table, fixed, atol=SINCOS_ATOL, rtol=0):
        return "joint", None, cls
    return "learned", table.clone(), cls


def decoder_table_matches(pos: torch.Tensor, grid: tuple[int, ...], kind: str) -> bool:
    """Does a stored decoder table (prefix rows allowed) equal the one mim would compute?"""
    pos = pos.reshape(-1, pos.shape[-1]).float()  # [(1,) (prefix +) L, D] -> [(prefix +) L, D]
    table = pos[pos.shape[0] - math.prod(grid):]
    return torch.allclose(table, POS_EMBEDS[kind](table.shape[1], grid), atol=SINCOS_ATOL, rtol=0)


def described_config(**fields: Any) -> ModelConfig:
    """The ``ModelConfig`` a file describes; one that ``ModelConfig`` refuses (heads that do not
    divide a width) is a ``ConvertError``, one line."""
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConvertError(str(exc)) from None


def with_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """``config`` with the ``model.<key>`` values of a convert command (``with_changes``)."""
    try:
        return with_changes(config, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConvertError(str(exc)) from None


def export_grid(conv: Converted, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    """The token grid of an export: from ``input_size`` (or the weights' own)."""
    size = input_size or conv.input_size
    if size is None and conv.config.pos_grid is not None:
        return tuple(conv.config.pos_grid)
    if size is None:
        raise ConvertError("the weights do not say which input size they were made for; "
                           "pass input_size=[...] (spatial sizes, e.g. [224, 224])")
    patch = ((conv.config.patch_size,) * 2 if conv.config.tokenizer_name == "patch2d" else
             (conv.config.tubelet_size, conv.config.patch_size, conv.config.patch_size))
    if len(size) != len(patch) or any(s % p for s, p in zip(size, patch)):
        raise ConvertError(f"input_size {list(size)} does not fit patches of {list(patch)}")
    return tuple(s // p for s, p in zip(size, patch))


def encoder_table_for_export(conv: Converted, grid: tuple[int, ...]) -> torch.Tensor:
    """[L, D]: the encoder's table on ``grid`` (fixed sin-cos, or the learned one resized)."""
    model_cfg = conv.config
    if model_cfg.pos_embed == "learned":
        from mim.models.pos_embed import interpolate_pos_embed

        table = conv.state[TABLE]
        old = tuple(model_cfg.pos_grid)
        return table if old == tuple(grid) else interpolate_pos_embed(table, old, grid)
    return POS_EMBEDS[model_cfg.pos_embed](model_cfg.embed_dim, grid)


def check_plain_tokenizer(conv: Converted, rank: int, target: str) -> None:
    expected = "patch2d" if rank == 2 else "cube"
    if conv.config.tokenizer_name != expected:
        raise ConvertError(f"{target} holds a '{expected}' patch embedding; this model's "
                           f"tokenizer is '{conv.config.tokenizer_name}'")
