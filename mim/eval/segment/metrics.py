"""Segmentation scores from confusion matrices (rows: ground truth, columns: prediction).

2D (mmseg's ``IoUMetric``): the matrix is summed over every held-out image, then per class
IoU = TP / (TP + FP + FN) and accuracy = TP / (TP + FN), NaN for a class that is neither in
the labels nor predicted; mIoU and mAcc are their means over the other classes; aAcc is the
share of labelled pixels predicted right. 3D (MONAI's ``DiceMetric``, the Decathlon's):
Dice = 2 TP / (2 TP + FP + FN) per volume and class, NaN where a class is in neither the
label nor the prediction, then the mean over volumes per class; mean Dice with and without
class 0 (background). Pixels at the ignore index are not scored.
"""
from __future__ import annotations

import math

import torch


def confusion(pred: torch.Tensor, label: torch.Tensor, classes: int,
              ignore: int) -> torch.Tensor:
    """pred, label [*s] -> int64 [classes, classes]."""
    valid = label != ignore
    index = label[valid].long() * classes + pred[valid].long()  # [n]
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def _ratio(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    top, bottom = top.double(), bottom.double()
    return torch.where(bottom > 0, top / bottom.clamp_min(1), torch.full_like(top, math.nan))


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return kept.mean().item() if kept.numel() else math.nan


def iou_scores(matrix: torch.Tensor, names: list[str]) -> dict:
    """mIoU, mAcc, aAcc (percent) and the per-class IoU of a summed confusion matrix."""
    tp = matrix.diag()
    gt, pred = matrix.sum(dim=1), matrix.sum(dim=0)
    iou = _ratio(tp, gt + pred - tp)  # [classes]
    acc = _ratio(tp, gt)
    return {"mIoU": 100 * _nanmean(iou), "mAcc": 100 * _nanmean(acc),
            "aAcc": 100 * tp.sum().item() / max(1, matrix.sum().item()),
            "per_class_iou": {n: (None if math.isnan(v) else 100 * v)
                              for n, v in zip(names, iou.tolist())}}


def dice(matrix: torch.Tensor) -> torch.Tensor:
    """One volume's Dice per class (NaN: the class is in neither label nor prediction)."""
    tp = matrix.diag()
    gt, pred = matrix.sum(dim=1), matrix.sum(dim=0)
    return _ratio(2 * tp, gt + pred)


def dice_scores(per_volume: list[torch.Tensor], names: list[str]) -> dict:
    """Mean Dice (percent) with and without class 0, and per class, from each volume's."""
    table = torch.stack(per_volume)  # [volumes, classes]
    per_class = torch.stack([torch.tensor(_nanmean(table[:, k])) for k in range(table.shape[1])])
    return {"mean_dice": 100 * _nanmean(per_class),
            "mean_dice_foreground": 100 * _nanmean(per_class[1:]),
            "per_class_dice": {n: (None if math.isnan(v) else 100 * v)
                               for n, v in zip(names, per_class.tolist())}}
