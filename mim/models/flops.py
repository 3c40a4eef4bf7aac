"""The forward FLOPs of one sample through the encoder and the decoder (``derived.json``'s
``encoder_gflops`` and ``decoder_gflops``), so that tokenizers, masks and decoders can be
compared by what they cost.

The tokenizer is measured: built on the CPU and run once on one sample under torch's
``FlopCounterMode`` (every matmul and convolution, 2 FLOPs per multiply-add), which also says how
many tokens the encoder sees (a hybrid tokenizer's visible count is its own). The transformer
blocks are counted from their shapes: per block on N tokens of width D with an MLP of width H,
``2 N (4 D^2 + 2 D H)`` for the projections and ``4 N^2 D`` for attention (its two matmuls,
which the counter does not see in every attention kernel). A windowed decoder block
(``model.decoder_window``) attends within windows of ``n`` tokens: ``4 L n D`` for the L grid
tokens (a prefix token skips attention, not the MLP).
A training step costs about three times the forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from mim.models.factory import ModelConfig, build_tokenizer


def block_flops(tokens: int, dim: int, mlp_ratio: float) -> int:
    """One transformer block's forward on ``tokens`` tokens of width ``dim``."""
    hidden = int(dim * mlp_ratio)
    return 2 * tokens * (4 * dim * dim + 2 * dim * hidden) + 4 * tokens * tokens * dim


def window_block_flops(tokens: int, prefix: int, window: int, dim: int, mlp_ratio: float) -> int:
    """One windowed block's forward (``WindowBlock``): attention on ``tokens`` grid tokens in
    windows of ``window`` tokens, the MLP on those and the ``prefix`` tokens."""
    hidden = int(dim * mlp_ratio)
    return (2 * tokens * 4 * dim * dim + 4 * tokens * window * dim
            + 2 * (tokens + prefix) * 2 * dim * hidden)


@dataclass(frozen=True)
class Tokenized:
    flops: int  # the tokenizer's forward on one sample
    visible: int  # Lv: the tokens the encoder sees
    tokens: int  # L: the token grid's
    patch_dim: int  # P: values the decoder predicts per token
    grid: tuple[int, ...] = ()  # the token grid


def tokenize_once(cfg: ModelConfig, shape: tuple[int, ...], mask: torch.Tensor) -> Tokenized:
    """The tokenizer of ``cfg`` run on one sample of ``shape`` (C, *spatial) under ``mask``
    bool [L'] (on its mask grid), its FLOPs counted."""
    with torch.random.fork_rng(devices=[]):  # the run's seeded draws stay as they are
        tokenizer = build_tokenizer(cfg, shape[0]).eval()
    x = torch.zeros(1, *shape)  # [1, C, *spatial]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = tokenizer.tokenize(x, mask[None])
    grid = tuple(tokenizer.grid(shape))
    return Tokenized(int(counter.get_total_flops()), out.visible.shape[1], math.prod(grid),
                     tokenizer.patch_dim, grid)


def forward_flops(cfg: ModelConfig, shape: tuple[int, ...], mask: torch.Tensor,
                  targets: int | None = None) -> dict[str, float]:
    """GFLOPs of one sample's forward: ``encoder_gflops`` (tokenizer and blocks on the visible
    tokens) and ``decoder_gflops`` (on every token, or on the visible and ``targets`` ones
    under decoder masking)."""
    t = tokenize_once(cfg, shape, mask)
    prefix = int(cfg.cls_token)
    encoded = prefix + t.visible
    decoded = prefix + (t.tokens if targets is None else t.visible + targets)
    encoder = t.flops + cfg.depth * block_flops(encoded, cfg.embed_dim, cfg.mlp_ratio)
    width = cfg.decoder_embed_dim
    if cfg.decoder_window is None:
        blocks = block_flops(decoded, width, cfg.mlp_ratio)
    else:  # windowed attention over the whole grid (no decoder masking with windows)
        blocks = window_block_flops(t.tokens, prefix, math.prod(cfg.decoder_window), width,
                                    cfg.mlp_ratio)
    decoder = (2 * encoded * cfg.embed_dim * width  # decoder_embed
               + cfg.decoder_depth * blocks
               + 2 * decoded * width * t.patch_dim)  # decoder_pred
    return {"encoder_gflops": encoder / 1e9, "decoder_gflops": decoder / 1e9}
