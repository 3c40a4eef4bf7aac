"""End-to-end and partial fine-tuning (MAE, Sec. 4.3 and Table 9).

The encoder (built with ``finetune.drop_path``) plus a linear head (weights ~ N(0, 2e-5), MAE's
fine-tuning init) on the pooled tokens. AdamW with layer-wise lr decay (Clark et al. 2020, as
BEiT and MAE use it): the head and final norm get the full lr, block i of d gets
decay^(d - i), the patch embedding and tokens decay^(d + 1); no weight decay on biases, norms
and tokens. Training views are the modality's fine-tuning views where it has them
(``LabelledData.train_strong``; images and videos: RandAugment and random erasing). Mixup /
cutmix with label smoothing through timm's ``Mixup`` and ``SoftTargetCrossEntropy`` (cutmix
boxes cover the last two axes; leading axes such as time are folded into channels so every
frame gets the same box). Optional EMA of the weights (timm's ``ModelEmaV3``). Partial fine-tuning
(``blocks=k``) trains only the last k blocks, the final norm and the head (k = 0: norm and
head). Several test views average their softmax. AdamW is torch's fused kernel on CPU and CUDA,
and ``finetune.compile`` compiles the blocks or the model as ``train.compile`` does.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn

from mim.engine import compiling
from mim.engine.optim import decays, fused_adamw
from mim.eval.schema import FinetuneConfig
from mim.eval.features import accuracy, pool, split_views
from mim.eval.loaders import batches
from mim.eval.schedule import lr_at, set_lr
from mim.models.model import MaskedAutoencoder, is_decoder
from mim.spec import LabelledData

log = logging.getLogger("mim")


class Classifier(nn.Module):
    """Encoder + linear head; the MAE decoder is left out."""

    def __init__(self, mae: MaskedAutoencoder, num_classes: int, how: str):
        super().__init__()
        self.encoder, self.how = mae, how
        self.head = nn.Linear(mae.tokenizer.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *spatial] -> logits [B, classes]."""
        return self.head(pool(self.encoder.encode(x), self.how))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, (V,) C, *spatial] -> class probabilities [B, classes], views averaged."""
        flat, views = split_views(x, self.encoder.tokenizer.rank)
        probs = self(flat).float().softmax(dim=-1)  # [B V, classes]
        return probs.reshape(-1, views, probs.shape[-1]).mean(dim=1)  # '(b v) k -> b k' (mean)


def layer_id(name: str, depth: int) -> int:
    """0 for the embedding, i + 1 for block i, depth + 1 for the norm and the head."""
    if name.startswith(("encoder.tokenizer", "encoder.cls_token", "encoder.learned_pos_embed")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Per (layer, decay) group with its ``lr_scale``. Ours, not timm's
    ``param_groups_layer_decay``: that needs a ``group_matcher`` on the model and trains every
    layer, where partial fine-tuning freezes all but the last k blocks."""
    depth = len(model.encoder.blocks)
    # all blocks tuned is full fine-tuning (MAE Fig. 9: tuning 24 of 24 blocks), embedding too
    first_trained = 0 if cfg.blocks is None or cfg.blocks >= depth else depth + 1 - cfg.blocks
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        short = name.removeprefix("encoder.")
        if name.startswith("encoder.") and is_decoder(short):
            param.requires_grad_(False)  # the MAE decoder
            continue
        layer = layer_id(name, depth)
        if layer < first_trained:
            param.requires_grad_(False)  # partial fine-tuning: frozen below the last k blocks
            continue
        no_decay = not decays(name, param)
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "lr_scale": cfg.layer_decay ** (depth + 1 - layer)})
        group["params"].append(param)
    return list(groups.values())


def fold_for_cutmix(x: torch.Tensor) -> torch.Tensor:
    """[B, C, *lead, H, W] -> [B, C * prod(lead), H, W] (a view): cutmix boxes on H, W."""
    return x.reshape(x.shape[0], -1, *x.shape[-2:])  # 'b c ... h w -> b (c ...) h w'


@dataclass
class _Setup:
    """What one fine-tuning run trains with, built in a fixed order (the head's init, then the
    EMA's copy, draw from the seeded generator)."""

    model: Classifier
    runner: nn.Module  # the model, or its torch.compile'd call
    optimizer: torch.optim.Optimizer
    batch: int
    mixup: Mixup | None
    criterion: nn.Module
    ema: ModelEmaV3 | None


def _setup(mae: MaskedAutoencoder, data: LabelledData, cfg: FinetuneConfig, how: str,
           device: torch.device, seed: int) -> _Setup:
    num_classes = len(data.classes)
    torch.manual_seed(seed)
    model = Classifier(mae, num_classes, how).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.blr, betas=tuple(cfg.betas),
                                  fused=fused_adamw(device.type))
    batch = min(cfg.batch_size, len(data.train)) // 2 * 2  # mixup pairs a batch with its flip
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    if batch < 2:
        raise ValueError(f"finetune: {len(data.train)} training items; need at least 2")
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                  num_classes=num_classes) if mixing else None
    criterion = SoftTargetCrossEntropy() if mixing else nn.CrossEntropyLoss(
        label_smoothing=cfg.smoothing)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    # after the EMA's deep copy: the copy stays eager, with no compiled call bound to this model
    if cfg.compile == "blocks":
        compiling.compile_blocks(model)
    runner = torch.compile(model) if cfg.compile == "model" else model
    return _Setup(model, runner, optimizer, batch, mixup, criterion, ema)


def _step(run: _Setup, cfg: FinetuneConfig, x: torch.Tensor, y: torch.Tensor, lr: float,
          step: int) -> torch.Tensor:
    """One optimiser step on the batch ``x`` [B, C, *spatial], ``y`` [B]; its loss."""
    if run.mixup is not None:
        folded, y = run.mixup(fold_for_cutmix(x), y)  # mixes x in place through the view
        x = folded.reshape(x.shape)  # back to [B, C, *lead, H, W]
    set_lr(run.optimizer, lr)
    loss = run.criterion(run.runner(x), y)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"finetune: loss {loss.item()} at step {step + 1}; "
                                 "lower finetune.blr or set finetune.clip_grad")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model, step=step + 1)
    return loss


def _scores(run: _Setup, data: LabelledData, device: torch.device, batch_size: int,
            num_workers: int, epoch: int, loss: torch.Tensor) -> dict[str, Any]:
    """The record of an evaluated epoch: the loss, the model's scores and its EMA's."""
    record = {"epoch": epoch, "loss": loss.item(),
              **evaluate(run.model, data, device, batch_size, num_workers)}
    if run.ema is not None:
        ema_scores = evaluate(run.ema.module, data, device, batch_size, num_workers)
        record.update(ema_top1=ema_scores["top1"], ema_top5=ema_scores["top5"])
    log.info("finetune epoch %d: loss %.4f, top-1 %.2f%%", epoch, record["loss"],
             record["top1"])
    return record


def finetune(mae: MaskedAutoencoder, data: LabelledData, cfg: FinetuneConfig, how: str,
             device: torch.device, batch_size: int, num_workers: int,
             seed: int) -> dict[str, Any]:
    run = _setup(mae, data, cfg, how, device, seed)
    steps_per_epoch = max(1, len(data.train) // run.batch)
    peak = cfg.peak_lr(run.batch)
    history, step = [], 0
    train = data.train_strong if data.train_strong is not None else data.train
    for epoch in range(cfg.epochs):
        run.model.train()
        for x, y in batches(train, run.batch, num_workers, seed, epoch, shuffle=True,
                            drop_last=True):
            lr = lr_at(step, steps_per_epoch, cfg.epochs, cfg.warmup_epochs, peak, cfg.min_lr)
            loss = _step(run, cfg, x.to(device), y.to(device), lr, step)
            step += 1
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            history.append(_scores(run, data, device, batch_size, num_workers, epoch + 1, loss))
    return _result(run, history, step, peak)


def _result(run: _Setup, history: list[dict[str, Any]], step: int,
            peak: float) -> dict[str, Any]:
    final = history[-1]
    result = {"top1": final["top1"], "top5": final["top5"], "val_loss": final["val_loss"],
              "best_top1": max(r["top1"] for r in history), "steps": step, "lr": peak,
              "batch_size": run.batch,
              "trained_params": sum(p.numel() for p in run.model.parameters()
                                    if p.requires_grad),
              "history": history}
    if run.ema is not None:
        result.update(ema_top1=final["ema_top1"], ema_top5=final["ema_top5"])
    return result


@torch.no_grad()
def evaluate(model: Classifier, data: LabelledData, device: torch.device, batch_size: int,
             num_workers: int) -> dict[str, float]:
    model.eval()
    probs, labels = [], []
    for x, y in batches(data.val, batch_size, num_workers):
        probs.append(model.predict(x.to(device)).cpu())
        labels.append(y)
    scores, labels = torch.cat(probs), torch.cat(labels)
    return {"top1": accuracy(scores, labels, 1), "top5": accuracy(scores, labels, 5),
            "val_loss": F.nll_loss(scores.clamp_min(1e-12).log(), labels).item()}
