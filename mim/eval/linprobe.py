"""Linear probing (MAE, Sec. A.1 and Table 10): a linear classifier on the frozen encoder.

The encoder is frozen and in eval mode; the classifier is BatchNorm without affine (eps 1e-6)
then a linear layer (weights ~ N(0, 0.01), zero bias): the normalisation calibrates feature
scales and can be folded into the linear layer afterwards, so the probe stays linear. LARS (or
SGD) with momentum 0.9, no weight decay, no mixup / cutmix / drop path; training views are
RandomResizedCrop + flip every epoch (``augment=true``, MAE's recipe), or the test views' features
computed once (``augment=false``, MAE footnote 3: the same up to augmentation, much faster).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mim.eval.schema import LinprobeConfig
from mim.eval.features import accuracy, embed, extract
from mim.eval.lars import LARS
from mim.eval.loaders import batches
from mim.eval.schedule import lr_at, set_lr
from mim.spec import LabelledData

log = logging.getLogger("mim")


class ProbeHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(feats))  # [B, classes]


def _optimizer(head: nn.Module, cfg: LinprobeConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "lars":
        return LARS(head.parameters(), lr=lr, weight_decay=cfg.weight_decay,
                    momentum=cfg.momentum)
    return torch.optim.SGD(head.parameters(), lr=lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def linear_probe(model: nn.Module, data: LabelledData, cfg: LinprobeConfig, pool: str,
                 device: torch.device, batch_size: int, num_workers: int,
                 seed: int) -> dict[str, Any]:
    model.eval().requires_grad_(False)
    num_classes = len(data.classes)
    val_feats, val_labels = extract(model, data.val, pool, batch_size, num_workers, device)
    cached = None
    if not cfg.augment:
        cached = extract(model, data.train_plain, pool, batch_size, num_workers, device)
    torch.manual_seed(seed)
    head = ProbeHead(val_feats.shape[1], num_classes).to(device)
    batch = min(cfg.batch_size, len(data.train))
    steps_per_epoch = max(1, len(data.train) // batch)  # drop_last, as MAE's loader
    peak = cfg.peak_lr(batch)
    optimizer = _optimizer(head, cfg, peak)
    history, step = [], 0
    for epoch in range(cfg.epochs):
        head.train()
        for x, y in _epoch(model, data, cached, batch, num_workers, seed, epoch, pool, device):
            set_lr(optimizer, lr_at(step, steps_per_epoch, cfg.epochs, cfg.warmup_epochs, peak,
                                    cfg.min_lr))
            loss = F.cross_entropy(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"linprobe: loss {loss.item()} at epoch {epoch + 1}; "
                                     "lower linprobe.blr")
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            record = {"epoch": epoch + 1, "loss": loss.item(),
                      **_evaluate(head, val_feats, val_labels, device)}
            history.append(record)
            log.info("linprobe epoch %d: loss %.4f, top-1 %.2f%%", epoch + 1, record["loss"],
                     record["top1"])
    final = history[-1]
    return {"top1": final["top1"], "top5": final["top5"], "val_loss": final["val_loss"],
            "best_top1": max(r["top1"] for r in history), "steps": step, "lr": peak,
            "batch_size": batch, "history": history}


def _epoch(model, data, cached, batch, num_workers, seed, epoch, pool, device):
    """(features, labels) batches of one epoch: fresh augmented views, or the cached ones."""
    if cached is not None:
        feats, labels = cached
        g = torch.Generator().manual_seed(seed * 1000003 + epoch)
        order = torch.randperm(len(labels), generator=g)
        for start in range(0, len(order) - batch + 1, batch):
            ids = order[start:start + batch]
            yield feats[ids].to(device), labels[ids].to(device)
        return
    for x, y in batches(data.train, batch, num_workers, seed, epoch, shuffle=True,
                        drop_last=True):
        with torch.no_grad():
            feats = embed(model, x.to(device), pool).float()
        yield feats, y.to(device)


@torch.no_grad()
def _evaluate(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor,
              device: torch.device) -> dict[str, float]:
    head.eval()
    scores = head(feats.to(device)).cpu()
    return {"top1": accuracy(scores, labels, 1), "top5": accuracy(scores, labels, 5),
            "val_loss": F.cross_entropy(scores, labels).item()}
