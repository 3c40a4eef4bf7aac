"""``mim eval segment``: train a head on training crops, score whole held-out items.

Training: crops of ``data.input_size`` (the modality's rescaling and flips, seeded per sample,
``mim/data/segmentation.py``), AdamW with layer-wise lr decay on the encoder
(``segment.layer_decay``, the head at the full lr; mmseg's MAE / BEiT recipe), warmup then
cosine per iteration on the schedule the other protocols use; the linear head trains on a
frozen encoder. Loss: cross-entropy (the ignore index left out), or for volumes Dice +
cross-entropy (UNETR's; Dice over the softmax of the labelled voxels, per sample and class, as
MONAI's ``DiceCELoss``). Evaluation: every held-out item whole, by sliding windows
(``sliding.py``), arg-max, scored (``metrics.py``); every ``eval_every`` epochs and at the end.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mim.data import MimDataset
from mim.data.dataset import LOAD_ERRORS
from mim.engine.optim import decays, fused_adamw
from mim.eval.finetune import layer_id
from mim.eval.loaders import batches
from mim.eval.schedule import lr_at, set_lr
from mim.eval.schema import SegmentConfig
from mim.eval.segment.heads import Segmenter, flat_logits
from mim.eval.segment.metrics import confusion, dice, dice_scores, iou_scores
from mim.eval.segment.sliding import sliding_window
from mim.models.model import is_decoder
from mim.spec import SegmentData
from mim.wording import plural

log = logging.getLogger("mim")


def param_groups(model: Segmenter, cfg: SegmentConfig) -> list[dict[str, Any]]:
    """Per (layer, decay) group with its ``lr_scale``: encoder block i of d at
    layer_decay^(d - i), its embedding at layer_decay^(d + 1), the norm and the head at 1."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder.") and is_decoder(name.removeprefix("encoder.")):
            param.requires_grad_(False)  # the MAE decoder
            continue
        layer = layer_id(name, depth) if name.startswith("encoder.") else depth + 1
        no_decay = not decays(name, param)
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "lr_scale": cfg.layer_decay ** (depth + 1 - layer)})
        group["params"].append(param)
    return list(groups.values())


def dice_loss(logits: torch.Tensor, label: torch.Tensor, ignore: int) -> torch.Tensor:
    """1 - soft Dice per sample and class over the labelled voxels, averaged. logits
    [B, K, *s], label [B, *s]."""
    valid = (label != ignore).unsqueeze(1)  # [B, 1, *s]
    probs = logits.float().softmax(dim=1) * valid
    target = F.one_hot(label.masked_fill(label == ignore, 0), logits.shape[1])  # [B, *s, K]
    target = target.movedim(-1, 1).float() * valid  # [B, K, *s]
    axes = tuple(range(2, logits.dim()))
    overlap = (probs * target).sum(axes)  # [B, K]
    sizes = probs.sum(axes) + target.sum(axes)
    return (1 - (2 * overlap + 1e-5) / (sizes + 1e-5)).mean()


def loss_of(kind: str, logits: torch.Tensor, label: torch.Tensor, ignore: int) -> torch.Tensor:
    ce = F.cross_entropy(flat_logits(logits).float(), label.reshape(-1), ignore_index=ignore)
    return ce + dice_loss(logits, label, ignore) if kind == "dice_ce" else ce


class _Whole(Dataset):
    """Held-out items whole, in order; one that cannot be read gives its (path, reason)."""

    def __init__(self, dataset: MimDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset.load(index, 0)
        except LOAD_ERRORS as exc:
            return self.dataset.describe(index), str(exc) or type(exc).__name__


def whole_items(dataset: MimDataset, workers: int) -> Iterator[tuple[int, torch.Tensor,
                                                                      torch.Tensor]]:
    """(index, x [C, *s], label [*s]) of every readable held-out item; the others skipped,
    counted and named, never replaced (a metric scores each item once)."""
    loader = DataLoader(_Whole(dataset), batch_size=None, num_workers=workers)
    skipped = []
    for index, (x, label) in enumerate(loader):
        if isinstance(x, str):
            skipped.append(f"{x}: {label}")
            continue
        yield index, x, label
    if skipped:
        log.warning("segment: %s skipped (first: %s)", plural(len(skipped), "held-out item"),
                    skipped[0])


@dataclass
class Scoring:
    """How held-out items are scored."""

    window: tuple[int, ...]
    overlap: float
    weighting: str
    batch: int
    workers: int
    ignore: int
    pictures: int = 0
    pictures_dir: Path | None = None


@torch.no_grad()
def evaluate(model: Segmenter, data: SegmentData, score: Scoring, device: torch.device,
             rank: int) -> dict[str, Any]:
    model.eval()
    classes = len(data.classes)
    total = torch.zeros(classes, classes, dtype=torch.long)
    volumes, count, drawn = [], 0, []
    for index, x, label in whole_items(data.val, score.workers):
        logits = sliding_window(model, x[None].to(device), score.window, score.overlap,
                                score.weighting, score.batch)  # [1, K, *s]
        pred = logits[0].argmax(dim=0).cpu()  # [*s]
        matrix = confusion(pred, label, classes, score.ignore)
        total += matrix
        volumes.append(dice(matrix))
        count += 1
        if len(drawn) < score.pictures and data.render is not None and score.pictures_dir:
            stem = score.pictures_dir / f"segment-{index:04d}"
            drawn.append(str(data.render(x, label, pred, data.classes, stem)))
    if not count:
        raise ValueError("segment: no held-out item could be read")
    scores = iou_scores(total, data.classes) if rank == 2 else dice_scores(volumes, data.classes)
    return {**scores, "items": count, **({"pictures": drawn} if drawn else {})}


def _summary(scores: dict[str, Any]) -> str:
    if "mIoU" in scores:
        return f"mIoU {scores['mIoU']:.2f}%, pixel accuracy {scores['aAcc']:.2f}%"
    return (f"mean Dice {scores['mean_dice']:.2f}% ({scores['mean_dice_foreground']:.2f}% "
            "without background)")


def train_head(model: Segmenter, data: SegmentData, cfg: SegmentConfig, crop: list[int],
               score: Scoring, device: torch.device, seed: int, rank: int) -> dict[str, Any]:
    scale = tuple(cfg.scale) if cfg.scale is not None else data.scale  # else the modality's
    foreground = cfg.foreground if cfg.foreground is not None else data.foreground
    train = data.train.cropped(crop, scale, data.flips, foreground)
    batch = min(cfg.batch_size, len(train))
    if batch < 2:
        raise ValueError(f"segment: {len(train)} training items; need at least 2 "
                         "(BatchNorm in the head)")
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=0.0, betas=tuple(cfg.betas),
                                  fused=fused_adamw(device.type))
    steps_per_epoch = max(1, len(train) // batch)
    peak = cfg.peak_lr(batch)
    history, step, losses = [], 0, []
    for epoch in range(cfg.epochs):
        model.train()
        for x, label in batches(train, batch, score.workers, seed, epoch, shuffle=True,
                                drop_last=True):
            set_lr(optimizer, lr_at(step, steps_per_epoch, cfg.epochs, cfg.warmup_epochs, peak,
                                    cfg.min_lr))
            loss = loss_of(cfg.loss, model(x.to(device)), label.to(device), score.ignore)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"segment: loss {loss.item()} at step {step + 1}; "
                                         "lower segment.blr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            last = epoch + 1 == cfg.epochs
            scores = evaluate(model, data, score if last else _no_pictures(score), device, rank)
            mean = sum(losses) / max(1, len(losses))
            history.append({"epoch": epoch + 1, "loss": mean, **scores})
            log.info("segment epoch %d: loss %.4f, %s", epoch + 1, mean, _summary(scores))
            losses = []
    final = dict(history[-1])
    final.update(steps=step, lr=peak, batch_size=batch, history=history,
                 trained_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    return final


def _no_pictures(score: Scoring) -> Scoring:
    return Scoring(score.window, score.overlap, score.weighting, score.batch, score.workers,
                   score.ignore)


def summary_of(metrics: dict[str, Any]) -> str:
    return _summary(metrics)

