"""The model factory: ``ModelConfig`` and building a model from it (``model_config``,
``build_tokenizer``, ``token_grids``, ``check_decoder_grid``, ``build_model``, ``create_model``,
``list_models`` over ``MODELS``).

``mim/models/model.py`` holds the model itself (``MaskedAutoencoder``); this file turns a preset
name or a config into one.

A preset is a factory returning a ``ModelConfig``, registered in ``MODELS`` by the modality whose
samples it pretrains on (``mim.modalities.<name>.presets``; the size tables they share are in
``mim.models.sizes``). The same dataclass is the Hydra schema of the ``model`` config group, so
``model=mae_vit_base_patch16 model.depth=6`` is typed and checked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

import torch

from mim.config.overrides import typed
from mim.masking import DecoderMasking
from mim.models.blocks import check_window
from mim.models.model import WINDOW_WITH_TARGETS, MaskedAutoencoder, check_choices
from mim.registry import MODELS, TOKENIZERS, UnknownNameError
from mim.models.coords import KINDS as COORDS
from mim.models.tokenizers.base import Tokenizer


@dataclass
class ModelConfig:
    name: str = "mae_vit_base_patch16"  # the preset (names the run directory)
    # how samples become tokens: {name: patch2d | cube | hybrid2d | hybrid3d | a plugin's, and
    # the tokenizer's own parameters (its Config; mim train --help lists them)}; a bare name
    # stands for {name: NAME} with the tokenizer's defaults
    tokenizer: Any = field(default_factory=lambda: {"name": "patch2d"})
    patch_size: int = 16  # spatial side of a patch, in pixels (voxels)
    tubelet_size: int = 1  # time (or depth) extent of a cube; ignored by patch2d
    embed_dim: int = 768  # encoder width
    depth: int = 12  # encoder blocks
    num_heads: int = 12  # encoder attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / width, encoder and decoder
    decoder_embed_dim: int = 512  # decoder width
    decoder_depth: int = 8  # decoder blocks
    decoder_num_heads: int = 16  # decoder attention heads
    cls_token: bool = True  # prepend a class token to the encoder's sequence
    # joint (sin-cos over the grid) | separable (space + time tables added; MAE-ST) | flat
    # (VideoMAE's 1D table over the flattened token index) | learned (a trained table; pos_grid)
    pos_embed: str = "joint"
    # targets are each patch normalised by its own mean and variance (MAE)
    norm_pix_loss: bool = True
    loss_on: str = "masked"  # masked | all: the tokens the loss is taken on
    drop_path: float = 0.0  # stochastic depth rate of the encoder
    norm_eps: float = 1e-6  # LayerNorm eps (MAE, timm: 1e-6; Hugging Face ports: 1e-12)
    pos_grid: Optional[list[int]] = None  # grid of the table with pos_embed=learned
    # none | decoder | encoder | all: recompute those blocks' activations in backward (memory
    # for time; under XLA the compiler may undo it)
    activation_checkpointing: str = "none"
    # weights to start a new run from (any format ``mim convert`` reads; mim/init.py): not a
    # resume, and a checkpoint of the run itself wins over it
    init: Optional[str] = None
    # dates and place added to the tokens (Prithvi-EO-2.0's TL; mim/models/coords.py): none |
    # time | location | both; the data must give them (data.coords=true)
    coords: str = "none"
    coords_learn_scale: bool = False  # learn each embedding's scale (from 0.1; else 1, fixed)
    # the share of samples whose dates and place are dropped in training, so that the model
    # also works without them (Prithvi-EO-2.0 drops them at random)
    coords_drop: float = 0.1
    # model.init from weights of other bands: match (the weights' bands mapped by name; a band
    # of the run the weights lack stops the run) or random (such bands start at random, listed)
    init_bands: str = "match"
    # the decoder's attention within windows of the token grid, one size per grid axis, each
    # dividing its axis (AudioMAE's local decoder: [4, 4] on its 64 x 8 grid); odd decoder
    # blocks move the windows (model.decoder_window_shift); null: global attention
    decoder_window: Optional[list[int]] = None
    # how far the odd decoder blocks move their windows, per grid axis, each below its window
    # (AudioMAE: [2, 0], along time only); null: half the window on every axis (Swin)
    decoder_window_shift: Optional[list[int]] = None

    def __post_init__(self) -> None:
        if self.coords not in COORDS:
            raise ValueError(f"model.coords: '{self.coords}' is not one of: {', '.join(COORDS)}")
        if not 0.0 <= self.coords_drop < 1.0:
            raise ValueError(f"model.coords_drop: a share in [0, 1), got {self.coords_drop}")
        if self.init_bands not in ("match", "random"):
            raise ValueError(f"model.init_bands: '{self.init_bands}' is not one of: match, "
                             "random")
        for key in ("patch_size", "tubelet_size", "embed_dim", "depth", "num_heads",
                    "decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        for dim, heads, key in ((self.embed_dim, self.num_heads, "num_heads"),
                                (self.decoder_embed_dim, self.decoder_num_heads,
                                 "decoder_num_heads")):
            if dim % heads:
                raise ValueError(f"model.{key}: {heads} does not divide the width {dim}")
        check_choices(pos_embed=self.pos_embed, loss_on=self.loss_on,
                      activation_checkpointing=self.activation_checkpointing)
        if self.pos_embed == "learned" and self.pos_grid is None:
            raise ValueError("model.pos_grid: model.pos_embed=learned needs the grid of its "
                             "table: set model.pos_grid=[...] to the token grid, the input size "
                             "/ model.patch_size per axis (e.g. [14,14] for 224 px, patch 16)")
        if self.pos_embed != "learned" and self.pos_grid is not None:
            raise ValueError(f"model.pos_grid: only model.pos_embed=learned has a table grid "
                             f"(this model has {self.pos_embed}); remove model.pos_grid or set "
                             "model.pos_embed=learned")
        if not 0.0 < self.norm_eps < 1.0:
            raise ValueError(f"model.norm_eps: must be in (0, 1), got {self.norm_eps}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"model.drop_path: must be in [0, 1), got {self.drop_path}")
        self._check_window()
        self.tokenizer = tokenizer_node(self)

    def _check_window(self) -> None:
        window, shift = self.decoder_window, self.decoder_window_shift
        if window is None:
            if shift is not None:
                raise ValueError("model.decoder_window_shift: only with model.decoder_window; "
                                 "remove it or set model.decoder_window=[...]")
            return
        if not window or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                             for w in window):
            raise ValueError(f"model.decoder_window: one positive integer per grid axis "
                             f"expected, got {list(window)}")
        if shift is not None and (len(shift) != len(window) or any(
                isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < w
                for s, w in zip(shift, window))):
            raise ValueError(f"model.decoder_window_shift: one integer per window axis in "
                             f"[0, window) expected for model.decoder_window={list(window)}, "
                             f"got {list(shift)}")

    @property
    def tokenizer_name(self) -> str:
        """The registered name of the tokenizer (``model.tokenizer.name``)."""
        return self.tokenizer["name"]


def tokenizer_node(cfg: ModelConfig) -> dict[str, Any]:
    """``cfg.tokenizer`` complete: its name and every parameter of the tokenizer's ``Config``
    (defaults filled in, types and the checks of the dataclass and of ``check_config`` run);
    ValueError naming the key."""
    node = {"name": cfg.tokenizer} if isinstance(cfg.tokenizer, str) else dict(cfg.tokenizer)
    name = node.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"model.tokenizer.name: a tokenizer's name expected (valid: "
                         f"{', '.join(TOKENIZERS.names())}), got {name!r}")
    try:
        cls = TOKENIZERS.get(name)
    except UnknownNameError as exc:
        raise ValueError(f"model.tokenizer: {exc}") from None
    schema = getattr(cls, "Config", None)
    if schema is None:
        if node:
            raise ValueError(f"model.tokenizer.{sorted(node)[0]}: unknown; the {name} "
                             "tokenizer takes no parameters")
        return {"name": name}
    config = typed(schema, node, "model.tokenizer")
    check = getattr(cls, "check_config", None)  # a registered factory function may have none
    if check is not None:
        check(config, cfg)
    return {"name": name, **asdict(config)}


def list_models() -> list[str]:
    return MODELS.names()


def model_config(name: str, **overrides) -> ModelConfig:
    """The preset's config with ``overrides`` applied (``with_changes``)."""
    return with_changes(MODELS.get(name)(), **overrides)


def with_changes(cfg: ModelConfig, **changes) -> ModelConfig:
    """``cfg`` with ``changes`` (ModelConfig fields; an unknown one is a TypeError naming the
    valid ones). A ``tokenizer`` dict is merged into ``cfg``'s, as Hydra merges
    ``model.tokenizer={...}`` (``create_model("mcmae_base", tokenizer={"kernel": 7})``),
    unless it names another tokenizer: that one's parameters start from its defaults."""
    unknown = sorted(set(changes) - set(asdict(cfg)))
    if unknown:
        raise TypeError(f"model.{unknown[0]}: unknown; valid: {', '.join(asdict(cfg))}")
    given = changes.get("tokenizer")
    if isinstance(given, dict) and given.get("name", cfg.tokenizer_name) == cfg.tokenizer_name:
        changes["tokenizer"] = {**cfg.tokenizer, **given}
    return replace(cfg, **changes)


def build_tokenizer(cfg: ModelConfig, in_chans: int) -> Tokenizer:
    """The tokenizer ``cfg.tokenizer`` names, with its parameters (the contract of
    ``mim.models.tokenizers.base.Tokenizer``)."""
    params = dict(cfg.tokenizer)
    cls = TOKENIZERS.get(params.pop("name"))
    return cls(in_chans=in_chans, embed_dim=cfg.embed_dim, patch_size=cfg.patch_size,
               tubelet_size=cfg.tubelet_size, drop_path=cfg.drop_path, **params)


def token_grids(cfg: ModelConfig, sample_shape: tuple[int, ...]
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(token grid, mask grid) of samples of shape ``(C, *spatial)`` under ``cfg``: the
    tokenizer's own rules on a copy built on the meta device, so no weights are made. ValueError
    when the shape does not fit the patch or cube size, UnknownNameError for a bad tokenizer."""
    shape = tuple(sample_shape)
    with torch.device("meta"):
        tokenizer = build_tokenizer(cfg, in_chans=shape[0])
    return tokenizer.grid(shape), tokenizer.mask_grid(shape)


def check_decoder_grid(cfg: ModelConfig, grid: tuple[int, ...], policy: Any = None) -> None:
    """ValueError naming ``model.decoder_window`` where its windows do not tile the token
    ``grid`` (one size per axis, each dividing it), or where the mask ``policy`` decodes only
    part of the grid (decoder masking); nothing without a window."""
    if cfg.decoder_window is None:
        return
    check_window(tuple(cfg.decoder_window), tuple(grid))
    if isinstance(policy, DecoderMasking):
        raise ValueError(WINDOW_WITH_TARGETS)


def build_model(cfg: ModelConfig, in_chans: int, nodata: bool = False) -> MaskedAutoencoder:
    """``nodata``: samples hold NaN where there is no data (``MaskedAutoencoder``)."""
    tokenizer = build_tokenizer(cfg, in_chans)
    return MaskedAutoencoder(
        tokenizer, depth=cfg.depth, num_heads=cfg.num_heads,
        decoder_embed_dim=cfg.decoder_embed_dim, decoder_depth=cfg.decoder_depth,
        decoder_num_heads=cfg.decoder_num_heads, mlp_ratio=cfg.mlp_ratio,
        cls_token=cfg.cls_token, pos_embed=cfg.pos_embed, norm_pix_loss=cfg.norm_pix_loss,
        loss_on=cfg.loss_on,
        drop_path=cfg.drop_path, norm_eps=cfg.norm_eps,
        pos_grid=tuple(cfg.pos_grid) if cfg.pos_grid is not None else None,
        activation_checkpointing=cfg.activation_checkpointing, nodata=nodata,
        coords=cfg.coords, coords_learn_scale=cfg.coords_learn_scale, coords_drop=cfg.coords_drop,
        decoder_window=tuple(cfg.decoder_window) if cfg.decoder_window is not None else None,
        decoder_window_shift=tuple(cfg.decoder_window_shift)
        if cfg.decoder_window_shift is not None else None)


def create_model(name: str, in_chans: int = 3, **overrides) -> MaskedAutoencoder:
    """``mim.create_model("mae_vit_base_patch16", depth=6)`` -> a MaskedAutoencoder."""
    return build_model(model_config(name, **overrides), in_chans)
