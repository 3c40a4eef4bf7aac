"""One pretraining step (forward + backward + AdamW step) of ours and of the Hugging Face peers.

Ours is the training loop's step, ``Trainer.train_step`` (``mim/engine/loop.py``), on the
``torch`` backend (AdamW from ``build_adamw``, cosine schedule), with the mask drawn ahead by
the mask policy as the loader workers do. The peers are ``transformers``'
``ViTMAEForPreTraining`` (draws its random mask inside the step) and ``VideoMAEForPreTraining``
(takes the same tube mask as ours), with SDPA attention, built at the same sizes from our
``ModelConfig``, trained the way ``transformers.Trainer`` does by default: AdamW ``fused=True``
(its default optimiser on torch >= 2.8), no weight decay on biases and LayerNorm weights, a
learning-rate schedule stepped every step.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Callable

import torch

from bench.harness import count_flops
from mim.data import Batch
from mim.engine.backends.torch import TorchBackend
from mim.engine.precision import DTYPES
from mim.engine.loop import LoopSettings, LoopState, Trainer
from mim.engine.optim import build_adamw, cosine_schedule
from mim.models.factory import ModelConfig, build_model

LR, BETAS, WEIGHT_DECAY = 1.5e-4, (0.9, 0.95), 0.05  # MAE, Appendix A.1


def ours_case(precision: str, mode: str = "none") -> str:
    """The round-robin name of our step in ``precision`` under ``train.compile=mode``."""
    return f"ours {precision}" + (f" compile={mode}" if mode != "none" else "")


def ours_label(mode: str = "none") -> str:
    """How a figure's row names our step under ``train.compile=mode``."""
    return "ours" + (f" + train.compile={mode}" if mode != "none" else "")


@dataclass
class Step:
    """A ready-to-time training step and what it trains."""

    run: Callable[[], None]
    model: torch.nn.Module
    forward: Callable[[], torch.Tensor]  # the loss alone (forward only), for counting FLOPs


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def ours(cfg: ModelConfig, x: torch.Tensor, masks: list[torch.Tensor], precision: str,
         compile: str = "none") -> Step:
    """Our step (``Trainer.train_step``, one micro-batch per step) on ``x`` [B, C, *spatial],
    cycling through the loader-made ``masks`` [B, L]."""
    torch.manual_seed(0)
    model = build_model(cfg, in_chans=x.shape[1])
    backend = TorchBackend(precision=precision, compile=compile)
    optimizer = build_adamw(model, LR, BETAS, WEIGHT_DECAY, backend.device.type)
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 10, 10 ** 6))
    x = x.to(backend.device)
    masks = [m.to(backend.device) for m in masks]
    label = torch.full((x.shape[0],), -1, device=backend.device)  # [B], unlabelled
    batches = itertools.cycle([Batch(x, m, label, items=x.shape[0]) for m in masks])
    size = x.shape[0]
    settings = LoopSettings(total_steps=10 ** 6, timeout=None, global_batch=size, accum_steps=1,
                            log_every=1, ckpt_every=1, vis_every=1, samples_per_epoch=size)
    # train_step needs only these; no checkpoints, logs or pictures are written
    trainer = Trainer(runner, model, backend, None, settings, None, None, LoopState(), None, {})

    def run() -> None:
        torch.set_flush_denormal(True)  # as `mim train` trains (engine/precision.py)
        trainer.train_step(batches)

    def forward() -> torch.Tensor:
        with backend.autocast():
            return runner(x, masks[0]).loss

    return Step(run, model, forward)


def _trainer_adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    """``transformers.Trainer``'s default optimiser: fused AdamW, biases and LayerNorm weights
    without weight decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norm weights
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS,
                             **fused)


def _peer_step(model: torch.nn.Module, call: Callable[[], torch.Tensor], device: torch.device,
               precision: str) -> Step:
    optimizer = _trainer_adamw(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))
    # transformers.Trainer's fp16: the same dynamic loss scale as ours (mim/engine/scaler.py)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def run() -> None:
        torch.set_flush_denormal(False)  # the peers' default: IEEE subnormals
        with _autocast(device, precision):
            loss = call()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    def forward() -> torch.Tensor:
        with _autocast(device, precision):
            return call()

    return Step(run, model, forward)


def peer_image(cfg: ModelConfig, x: torch.Tensor, mask_ratio: float, precision: str) -> Step:
    """``ViTMAEForPreTraining`` (SDPA) at ``cfg``'s sizes on ``x`` [B, 3, H, W]."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    config = ViTMAEConfig(
        image_size=x.shape[-1], patch_size=cfg.patch_size, num_channels=x.shape[1],
        hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads, intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        decoder_hidden_size=cfg.decoder_embed_dim, decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_num_heads,
        decoder_intermediate_size=int(cfg.decoder_embed_dim * cfg.mlp_ratio),
        mask_ratio=mask_ratio, norm_pix_loss=cfg.norm_pix_loss, layer_norm_eps=cfg.norm_eps,
        qkv_bias=True)
    model = ViTMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    model.to(x.device).train()
    return _peer_step(model, lambda: model(pixel_values=x).loss, x.device, precision)


def peer_video(cfg: ModelConfig, x: torch.Tensor, mask: torch.Tensor, precision: str) -> Step:
    """``VideoMAEForPreTraining`` (SDPA) at ``cfg``'s sizes on ``x`` [B, 3, T, H, W] (passed
    as its [B, T, 3, H, W]) with our tube ``mask`` [B, L]."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    torch.manual_seed(0)
    config = VideoMAEConfig(
        image_size=x.shape[-1], patch_size=cfg.patch_size, num_channels=x.shape[1],
        num_frames=x.shape[2], tubelet_size=cfg.tubelet_size, hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        decoder_hidden_size=cfg.decoder_embed_dim, decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_num_heads,
        decoder_intermediate_size=int(cfg.decoder_embed_dim * cfg.mlp_ratio),
        norm_pix_loss=cfg.norm_pix_loss, layer_norm_eps=cfg.norm_eps)
    model = VideoMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    model.to(x.device).train()
    frames = x.transpose(1, 2).contiguous()  # [B, T, 3, H, W], Hugging Face's layout
    return _peer_step(model, lambda: model(pixel_values=frames, bool_masked_pos=mask).loss,
                      x.device, precision)


def image_flops(step: Step) -> float:
    """Forward + backward FLOPs of one step, counted (forward, then backward of its loss)."""
    def once() -> None:
        step.forward().backward()

    flops = count_flops(once)
    step.model.zero_grad(set_to_none=True)
    return flops

