"""The modality-agnostic masked autoencoder: tokenize -> keep visible -> encode -> decode -> loss.

MAE (He et al. 2021, Sec. 3): the encoder runs on visible tokens only (no mask tokens); the light
decoder sees the encoded visible tokens plus one shared learned mask token per masked position,
with position embeddings added again; the loss is the MSE on masked patches, optionally against
per-patch normalised pixels ("norm-pix", Table 1d). Shapes: B batch, L tokens on the grid,
Lv visible, D encoder width, Dd decoder width, P values per patch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from mim.masking import MIN_VALID
from mim.models.keys import DECODER_PREFIXES
from mim.models.blocks import Block, WindowBlock
from mim.models.coords import CoordsEmbed
from mim.models.pos_embed import POS_EMBEDS, LearnedPosEmbed, sincos_1d
from mim.models.tokenizers.base import Tokenizer, gather_tokens, visible_ids


@dataclass
class Encoded:
    tokens: torch.Tensor  # [B, prefix + Lv, D], after the final norm
    ids_keep: torch.Tensor | None  # [B, Lv] grid positions of the visible tokens (None: all)
    grid: tuple[int, ...]
    num_prefix: int  # 1 with a cls token, else 0
    # from multi-scale (hybrid) tokenizers, see Tokenizer.tokenize; plain tokenizers leave them
    skip: torch.Tensor | None = None  # [B, Lv, D] added before decoder_embed (MCMAE Eq. 1)
    stages: tuple[torch.Tensor, ...] = ()  # earlier-stage maps [B, C_k, *grid_k], finest first


@dataclass
class MAEOutput:
    loss: torch.Tensor  # scalar
    pred: torch.Tensor  # [B, L, P] in the target layout of tokenizer.patchify
    mask: torch.Tensor  # [B, L] bool, True = masked


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float,
            eps: float = 1e-6) -> nn.ModuleList:
    # on the CPU even under ``with torch.device("meta")`` (sizes are counted that way)
    rates = torch.linspace(0, drop_path, depth, device="cpu").tolist() if depth else []
    # fused attention, LayerNorm eps 1e-6 as MAE; timm's parameter names (mim/models/blocks.py)
    return nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=r, eps=eps)
                         for r in rates)


def _window_blocks(dim: int, depth: int, heads: int, mlp_ratio: float,
                   window: tuple[int, ...], shift: tuple[int, ...] | None,
                   eps: float = 1e-6) -> nn.ModuleList:
    """The decoder's windowed blocks (AudioMAE's local decoder): even blocks on the grid's
    windows, odd ones on windows moved by ``shift`` (None: half the window on every axis,
    Swin's)."""
    shift = tuple(w // 2 for w in window) if shift is None else tuple(shift)
    return nn.ModuleList(WindowBlock(dim, heads, window, shift if k % 2 else None, mlp_ratio,
                                     qkv_bias=True, eps=eps) for k in range(depth))



def over_leading(table: torch.Tensor, grid: tuple[int, ...], lead: int) -> torch.Tensor:
    """A spatial table [prod(grid[lead:]), D] repeated over the ``lead`` leading grid axes ->
    [L, D] (the table itself when ``lead`` is 0)."""
    if not lead:
        return table
    return repeat(table, "s d -> (g s) d", g=math.prod(grid[:lead]))  # [G * h * w, D]


def is_decoder(name: str) -> bool:
    """Is the parameter or state key ``name`` (MaskedAutoencoder's naming) part of the decoder?"""
    return name.startswith(DECODER_PREFIXES)


def split_state(state: dict[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A MaskedAutoencoder state dict -> (encoder entries, decoder entries)."""
    return ({k: v for k, v in state.items() if not is_decoder(k)},
            {k: v for k, v in state.items() if is_decoder(k)})


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"encoder": n, "decoder": n}``: the model's parameters by part (meta tensors too)."""
    counts = {"encoder": 0, "decoder": 0}
    for name, p in model.named_parameters():
        counts["decoder" if is_decoder(name) else "encoder"] += p.numel()
    return counts


def patch_stats(patches: torch.Tensor, weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """patches [B, L, P] -> (mean, std), each [B, L, 1]: the per-patch statistics of the
    norm-pix target (MAE Table 1d; the unbiased variance plus 1e-6 under the root).
    ``weight`` [B, L, P] (1: a value of the data, 0: no data or padding): the statistics of
    the weighted values only."""
    if weight is None:
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
        return mean, std
    count = weight.sum(dim=-1, keepdim=True)  # [B, L, 1]
    mean = (patches * weight).sum(dim=-1, keepdim=True) / count.clamp(min=1)
    var = (((patches - mean) * weight) ** 2).sum(dim=-1, keepdim=True) / (count - 1).clamp(min=1)
    return mean, (var + 1.0e-6) ** 0.5


# model.activation_checkpointing: which block stacks recompute their activations in backward
RECOMPUTE = {"none": (False, False), "decoder": (False, True), "encoder": (True, False),
             "all": (True, True)}
# the allowed values of the model's options (ModelConfig's keys of the same names), one list each;
# "learned": a trained encoder table (ViT / timm weights), the decoder keeps the sin-cos one
CHOICES = {"pos_embed": (*POS_EMBEDS, "learned"), "loss_on": ("masked", "all"),
           "activation_checkpointing": tuple(RECOMPUTE)}


# decoder masking decodes part of the grid, windows need all of it (validation says it too)
WINDOW_WITH_TARGETS = ("model.decoder_window: windowed attention needs every token of the grid "
                       "in the decoder, decoder masking (mask=running_cell) decodes part of "
                       "them; remove model.decoder_window or choose another mask")


def check_choices(**values: str) -> None:
    """ValueError naming ``model.<key>`` and its valid values for a value not in ``CHOICES``;
    ModelConfig and MaskedAutoencoder both call it."""
    for key, value in values.items():
        if value not in CHOICES[key]:
            raise ValueError(f"model.{key}: '{value}' is not one of: {', '.join(CHOICES[key])}")


def _run(blocks: nn.ModuleList, x: torch.Tensor, recompute: bool, **context) -> torch.Tensor:
    """The blocks in turn on x [B, N, D]; with ``recompute`` while gradients are recorded, each
    block keeps only its input for backward and runs again there (activation checkpointing:
    less memory for about one more forward pass; drop-path draws are replayed). ``context``:
    what windowed blocks take besides x (the grid, the prefix tokens)."""
    for block in blocks:
        if recompute and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False, **context)
        else:
            x = block(x, **context)
    return x


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        tokenizer: Tokenizer,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mlp_ratio: float = 4.0,
        cls_token: bool = True,
        pos_embed: str = "joint",
        norm_pix_loss: bool = True,
        loss_on: str = "masked",
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        pos_grid: tuple[int, ...] | None = None,
        activation_checkpointing: str = "none",
        nodata: bool = False,
        coords: str = "none",
        coords_learn_scale: bool = False,
        coords_drop: float = 0.0,
        decoder_window: tuple[int, ...] | None = None,
        decoder_window_shift: tuple[int, ...] | None = None,
    ):
        super().__init__()
        check_choices(pos_embed=pos_embed, loss_on=loss_on,
                      activation_checkpointing=activation_checkpointing)
        self.recompute = RECOMPUTE[activation_checkpointing]  # (encoder, decoder)
        # "learned": the encoder's table is a parameter on ``pos_grid`` (ViT / timm weights),
        # resized to other grids on use; the decoder keeps the fixed sin-cos table
        self._pos_table = POS_EMBEDS.get(pos_embed, POS_EMBEDS["joint"])
        dim = tokenizer.embed_dim
        self.tokenizer = tokenizer
        self.num_prefix = int(cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.learned_pos_embed = LearnedPosEmbed(dim, pos_grid) if pos_embed == "learned" else None
        self.blocks = _blocks(dim, depth, num_heads, mlp_ratio, drop_path, norm_eps)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

        self.decoder_embed = nn.Linear(dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        # decoder_window: attention within windows of the token grid, shifted in odd blocks
        # (AudioMAE's local decoder, mim/models/blocks.py); None: global attention
        self.decoder_window = tuple(decoder_window) if decoder_window is not None else None
        if self.decoder_window is None:
            self.decoder_blocks = _blocks(decoder_embed_dim, decoder_depth, decoder_num_heads,
                                          mlp_ratio, 0.0, norm_eps)
        else:
            self.decoder_blocks = _window_blocks(decoder_embed_dim, decoder_depth,
                                                 decoder_num_heads, mlp_ratio,
                                                 self.decoder_window, decoder_window_shift,
                                                 norm_eps)
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(decoder_embed_dim, tokenizer.patch_dim)

        self.norm_pix_loss = norm_pix_loss
        self.loss_on = loss_on
        # inputs hold NaN where there is no data: zero for the encoder, never scored
        self.nodata = nodata
        # dates and location added to the tokens (mim/models/coords.py), encoder and decoder;
        # a sample's dropped with coords_drop in training
        self.coords_embed = CoordsEmbed(dim, coords, coords_learn_scale) \
            if coords != "none" else None
        self.decoder_coords_embed = CoordsEmbed(decoder_embed_dim, coords, coords_learn_scale) \
            if coords != "none" else None
        self.coords_drop = coords_drop
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self._init_weights()

    # -- MAE initialisation (xavier-uniform linears, normal(0.02) tokens) -----------------------
    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        proj = getattr(self.tokenizer, "proj", None)
        if proj is not None:  # MAE initialises the patch conv like a linear layer
            nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def pos_embed(self, grid: tuple[int, ...], dim: int, like: torch.Tensor,
                  decoder: bool = False) -> torch.Tensor:
        """Fixed sin-cos table [L, dim] for ``grid``, cached per grid, width, device and dtype.

        A tokenizer with ``leading_axes = k`` (band or group axes) gets the table of the spatial
        grid ``grid[k:]`` repeated over the leading axes: its bands share positions and take
        their identity from the tokenizer's embedding. Mask tokens have no such embedding, so
        the decoder's table (``decoder``) adds a fixed 1D sin-cos of the leading index, as
        SatMAE's decoder sees position and group.
        """
        lead = self.tokenizer.leading_axes
        key = (tuple(grid), dim, like.device, like.dtype) + ((decoder,) if lead else ())
        if key not in self._pos_cache:
            table = (self._pos_table(dim, grid) if not lead
                     else self._shared_table(tuple(grid), dim, decoder))  # [L, dim]
            self._pos_cache[key] = table.to(like.device, like.dtype)
        return self._pos_cache[key]

    def _shared_table(self, grid: tuple[int, ...], dim: int, decoder: bool) -> torch.Tensor:
        """[L, dim] for a grid with leading band or group axes (see ``pos_embed``)."""
        lead = self.tokenizer.leading_axes
        table = over_leading(self._pos_table(dim, grid[lead:]), grid, lead)  # [L, dim]
        if decoder:
            index = sincos_1d(dim, torch.arange(math.prod(grid[:lead]))).float()  # [G, dim]
            table = table + repeat(index, "g d -> (g s) d", s=math.prod(grid[lead:]))  # [L, dim]
        return table

    # -- the four steps ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                targets: torch.Tensor | None = None,
                coords: torch.Tensor | None = None) -> MAEOutput:
        """x [B, C, *spatial], mask bool [B, L] (True = masked) -> MAEOutput.

        ``targets`` bool [B, L] (decoder masking): reconstruct and score only these masked
        tokens; None reconstructs every token and scores the masked ones. ``coords`` [B, T, 4]:
        each sample's dates and place (``mim/models/coords.py``), where the model takes them.
        """
        coords = self._kept_coords(coords)
        self._check_mask(x, mask, targets)
        valid = None
        if self.nodata:  # NaN: no data (data.nodata); the encoder sees the band mean, 0
            valid = ~torch.isnan(x)  # [B, C, *spatial]
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        encoded = self.encode(x, mask, coords)
        if self.loss_on == "masked" and targets is None and encoded.ids_keep is not None \
                and encoded.ids_keep.shape[1] == mask.shape[1]:  # Lv is already on the host
            raise ValueError("mask: no token is masked, so the loss over masked tokens is "
                             "undefined; mask at least one token per row (True = masked)")
        pred = self.decode(encoded, targets, coords)
        return MAEOutput(loss=self.loss(x, pred, mask if targets is None else targets,
                                        self.value_weight(x, valid)),
                         pred=pred, mask=mask)

    def _check_mask(self, x: torch.Tensor, mask: torch.Tensor,
                    targets: torch.Tensor | None) -> None:
        """Shapes only (no device read): mask bool [B, L] on the mask grid, targets on the token
        grid (the same grid unless a hybrid tokenizer masks its input cells)."""
        shape = tuple(x.shape[1:])
        for name, value, grid in (("mask", mask, self.tokenizer.mask_grid(shape)),
                                  ("targets", targets, self.tokenizer.grid(shape))):
            if value is None:
                continue
            num_tokens = torch.Size(grid).numel()
            if value.dtype != torch.bool or tuple(value.shape) != (x.shape[0], num_tokens):
                raise ValueError(
                    f"{name}: expected bool [B, L] = [{x.shape[0]}, {num_tokens}] (L tokens on "
                    f"the grid of an input {tuple(x.shape[1:])}), got {value.dtype} "
                    f"{list(value.shape)}")

    def _kept_coords(self, coords: torch.Tensor | None) -> torch.Tensor | None:
        """``coords`` with each sample's dropped (NaN) at ``coords_drop`` in training."""
        if coords is None or self.coords_embed is None or not self.training \
                or not self.coords_drop:
            return coords
        dropped = torch.rand(coords.shape[0], device=coords.device) < self.coords_drop  # [B]
        return coords.masked_fill(dropped[:, None, None], float("nan"))

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None,
               coords: torch.Tensor | None = None) -> Encoded:
        """Encode the visible tokens (all tokens when ``mask`` is None); under ``nodata`` a
        NaN (no data) is encoded as 0, the band's mean."""
        tokens, ids_keep, grid, out = self._embed(x, mask, coords)
        tokens = _run(self.blocks, tokens, self.recompute[0])
        return Encoded(self.norm(tokens), ids_keep, grid, self.num_prefix, out.skip, out.stages)

    def hidden_states(self, x: torch.Tensor, blocks: list[int],
                      coords: torch.Tensor | None = None) -> tuple[list[torch.Tensor], Encoded]:
        """The whole input's tokens [B, prefix + L, D] after each of ``blocks`` (0-based, in
        order; the last block's after the final norm, as ``encode`` gives it), and the
        ``Encoded`` of the last one asked for (its grid and the tokenizer's stages)."""
        tokens, ids_keep, grid, out = self._embed(x, None, coords)
        wanted, states = set(blocks), []
        for index, block in enumerate(self.blocks[: max(blocks) + 1]):
            tokens = block(tokens)
            if index in wanted:
                last = index == len(self.blocks) - 1
                states.append(self.norm(tokens) if last else tokens)
        return states, Encoded(states[-1], ids_keep, grid, self.num_prefix, out.skip, out.stages)

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None, coords: torch.Tensor | None):
        """The visible tokens with their positions (and the cls token) before the blocks ->
        (tokens [B, prefix + Lv, D], ids_keep, grid, the tokenizer's output)."""
        if self.nodata:
            x = torch.nan_to_num(x, nan=0.0)
        grid = self.tokenizer.grid(x.shape[1:])
        out = self.tokenizer.tokenize(x, mask)  # the tokenizer says which positions it kept
        tokens, ids_keep = out.visible, out.ids_keep  # [B, Lv, D], [B, Lv] or None (all)
        lead = self.tokenizer.leading_axes  # band or group axes share the spatial table
        pos = (self.pos_embed(grid, tokens.shape[-1], tokens) if self.learned_pos_embed is None
               else over_leading(self.learned_pos_embed(grid[lead:]), grid, lead).to(tokens.dtype))
        if self.coords_embed is not None and coords is not None:
            # [L, D] + [B, L, D]: the grid's positions with each sample's dates and place
            pos = pos + self.coords_embed(coords, pos.shape[0]).to(tokens.dtype)
            tokens = tokens + (gather_tokens(pos, ids_keep) if ids_keep is not None else pos)
        else:
            tokens = tokens + (pos[ids_keep] if ids_keep is not None else pos)  # [B, Lv, D]
        if self.cls_token is not None:  # its position embedding is zero (MAE)
            cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat([cls, tokens], dim=1)  # [B, 1 + Lv, D]
        return tokens, ids_keep, grid, out

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features of the whole input for feature-pyramid heads (MCMAE Sec. 2.3,
        Fig. 2), finest first, each [B, C_k, *grid_k]: the tokenizer's earlier stages (hybrid:
        strides 4 and 8), the encoder output on the token grid (16), and that max-pooled by
        ``tokenizer.pyramid_pool`` (32)."""
        encoded = self.encode(x)
        top = encoded.tokens[:, encoded.num_prefix:].transpose(1, 2)  # [B, D, L]
        top = top.reshape(*top.shape[:2], *encoded.grid)  # [B, D, *grid]
        pool = F.max_pool2d if top.dim() == 4 else F.max_pool3d
        kernel = self.tokenizer.pyramid_pool
        return [*encoded.stages, top, pool(top, kernel, kernel)]

    def decode(self, encoded: Encoded, targets: torch.Tensor | None = None,
               coords: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded visible tokens -> predictions [B, L, P] for every grid position, or, with
        ``targets`` [B, L], for the visible and target positions only (zeros elsewhere)."""
        tokens = encoded.tokens  # [B, prefix + Lv, D]
        if encoded.skip is not None:  # Eq. 1: Linear(StrideConv(E1) + StrideConv(E2) + E3)
            tokens = tokens + F.pad(encoded.skip, (0, 0, encoded.num_prefix, 0))
        y = self.decoder_embed(tokens)  # [B, prefix + Lv, Dd]; the Linear of Eq. 1
        prefix, visible = y[:, : encoded.num_prefix], y[:, encoded.num_prefix:]
        batch, width = y.shape[0], y.shape[-1]
        num_tokens = torch.Size(encoded.grid).numel()
        if encoded.ids_keep is None:
            full = visible  # [B, L, Dd]
        else:  # mask tokens everywhere, then the visible tokens back at their grid positions
            full = self.mask_token.to(y.dtype).expand(batch, num_tokens, width)  # [B, L, Dd]
            index = encoded.ids_keep.unsqueeze(-1).expand(-1, -1, width)  # [B, Lv, Dd]
            full = full.scatter(1, index, visible)  # [B, L, Dd]
        full = full + self.pos_embed(encoded.grid, width, full, decoder=True)  # [B, L, Dd]
        if self.decoder_coords_embed is not None and coords is not None:
            full = full + self.decoder_coords_embed(coords, num_tokens).to(full.dtype)
        ids = None
        if targets is not None and encoded.ids_keep is not None:
            if self.decoder_window is not None:
                raise ValueError(WINDOW_WITH_TARGETS)
            ids = torch.cat([encoded.ids_keep, visible_ids(~targets)], dim=1)  # [B, Lv + Lt]
            full = gather_tokens(full, ids)  # [B, Lv + Lt, Dd]
        y = torch.cat([prefix, full], dim=1)  # [B, prefix + Ld, Dd]
        context = ({} if self.decoder_window is None
                   else {"grid": tuple(encoded.grid), "num_prefix": encoded.num_prefix})
        y = _run(self.decoder_blocks, y, self.recompute[1], **context)
        y = self.decoder_pred(self.decoder_norm(y))[:, encoded.num_prefix:]  # [B, Ld, P]
        if ids is None:
            return y  # [B, L, P]
        out = y.new_zeros(batch, num_tokens, y.shape[-1])  # [B, L, P]
        return out.scatter(1, ids.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y)

    def value_weight(self, x: torch.Tensor, valid: torch.Tensor | None = None
                     ) -> torch.Tensor | None:
        """[B, L, P]: 1 for a target value of the data, 0 for no data (``valid`` False, under
        ``nodata``) or a tokenizer's padding (``pads_targets``); None: every value counts."""
        if valid is None and not self.tokenizer.pads_targets:
            return None
        ones = torch.ones_like(x) if valid is None else valid.to(x.dtype)  # [B, C, *spatial]
        return self.tokenizer.patchify(ones)  # [B, L, P]; padding comes out 0

    def target(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction target [B, L, P]: pixels, or per-patch normalised pixels (norm-pix),
        their statistics over the values ``weight`` counts."""
        target = self.tokenizer.patchify(x)
        if self.norm_pix_loss:
            mean, std = patch_stats(target, weight)
            target = (target - mean) / std
        return target

    def loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches (or all, ``loss_on``);
        ``weight`` [B, L, P] (``value_weight``): over the values of the data only, and over
        the patches that are mostly data."""
        error = (pred.float() - self.target(x, weight).float()) ** 2  # [B, L, P]
        if weight is None:
            per_patch = error.mean(dim=-1)  # [B, L]
            scored = torch.ones_like(per_patch) if self.loss_on == "all" else mask.to(
                per_patch.dtype)
        else:
            weight = weight.float()
            count = weight.sum(dim=-1)  # [B, L]
            per_patch = (error * weight).sum(dim=-1) / count.clamp(min=1)
            full = self.value_weight(torch.ones_like(x)) if self.tokenizer.pads_targets \
                else None  # the values a patch holds without no data
            size = full.sum(dim=-1).float() if full is not None else weight.shape[-1]
            scored = (count > MIN_VALID * size).float()
            if self.loss_on == "masked":
                scored = scored * mask.to(scored.dtype)
        if weight is None and self.loss_on == "all":
            return per_patch.mean()
        return (per_patch * scored).sum() / scored.sum().clamp(min=1)
