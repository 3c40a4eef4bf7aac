"""Sliding-window inference in 2D and 3D: windows of the training crop's size, overlapping by
``overlap``, their logits blended (constant weights, or a Gaussian of sigma = window / 8 per
axis as nnU-Net and MONAI weight them), the input padded up to a window where smaller (half
before, half after) and the result cut back to it. Ours, not MONAI's ``sliding_window_inference`` (the same windows; with
constant weights the same logits, tested): importing MONAI takes seconds, which every 2D
evaluation would pay. MONAI's Gaussian is its ``GaussianFilter`` (erf-approximated, centred at
window // 2) on a delta; ours samples exp(-x^2 / 2 sigma^2) about the window's true centre.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def starts(size: int, window: int, overlap: float) -> list[int]:
    """First indices of the windows along one axis: every ``window * (1 - overlap)``, the
    last flush with the end."""
    if size <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    first = list(range(0, size - window + 1, step))
    return first if first[-1] == size - window else first + [size - window]


def gaussian(window: Sequence[int], device: torch.device) -> torch.Tensor:
    """[*window] weights: a Gaussian of sigma window / 8 per axis, peak 1, floored at its
    smallest positive value (no window pixel weighs nothing)."""
    weight = torch.ones((), device=device)
    for w in window:
        axis = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
        weight = weight[..., None] * torch.exp(-0.5 * (axis / (w / 8)) ** 2)
    return weight.clamp_min(weight[weight > 0].min())


@torch.no_grad()
def sliding_window(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   window: Sequence[int], overlap: float, weighting: str,
                   batch: int) -> torch.Tensor:
    """x [1, C, *lead, *s] -> logits [1, K, *s]: ``model`` ([n, C, *lead, *window] ->
    [n, K, *window]) on every window of the last axes (``lead``: a time stack's dates, kept
    whole), ``batch`` windows at a time."""
    size = tuple(x.shape[-len(window):])
    extra = [max(0, w - s) for w, s in zip(window, size)]
    before = [e // 2 for e in extra]  # padded on both sides, as MONAI pads
    if any(extra):
        x = F.pad(x, [v for e, b in zip(reversed(extra), reversed(before))
                      for v in (b, e - b)])  # F.pad: last axis first
    padded = tuple(x.shape[-len(window):])
    corners = list(itertools.product(*(starts(s, w, overlap) for s, w in zip(padded, window))))
    weight = (gaussian(window, x.device) if weighting == "gaussian"
              else torch.ones(tuple(window), device=x.device))
    total = count = None
    for first in range(0, len(corners), batch):
        chunk = corners[first:first + batch]
        boxes = [tuple(slice(a, a + w) for a, w in zip(c, window)) for c in chunk]
        logits = model(torch.cat([x[(..., *b)] for b in boxes])).float()
        if total is None:  # [1, K, *padded] and [*padded]
            total = x.new_zeros((1, logits.shape[1], *padded), dtype=torch.float32)
            count = x.new_zeros(padded, dtype=torch.float32)
        for box, out in zip(boxes, logits):
            total[(0, slice(None), *box)] += out * weight
            count[box] += weight
    logits = total / count
    return logits[(slice(None), slice(None), *(slice(b, b + s) for b, s in zip(before, size)))]

