"""Colours of label maps for ``segment.pictures``, shared by the modalities' renderers: a fixed
palette per class id (ADE20K-like: distinct hues at two brightness levels), black where a
pixel is not labelled (the ignore index), and label colours laid over a picture at half
opacity.
"""
from __future__ import annotations

import colorsys

import numpy as np
import torch


def palette(count: int) -> np.ndarray:
    """uint8 [count, 3]: class 0 gray, the others spread over the hue circle (golden-ratio
    steps), alternating two brightness levels."""
    colours = [(128, 128, 128)]
    for k in range(1, count):
        hue = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0 if k % 2 else 0.7)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.array(colours[:count], dtype=np.uint8)


def colour(label: torch.Tensor, count: int) -> np.ndarray:
    """label [*s] of class ids (others: not labelled) -> uint8 [*s, 3]."""
    ids = label.numpy()
    table = np.concatenate([palette(count), np.zeros((1, 3), np.uint8)])  # the last: black
    return table[np.where((ids >= 0) & (ids < count), ids, count)]


def overlay(picture: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 [*s, 3] pictures blended: ``alpha`` of the label colours."""
    mixed = (1 - alpha) * picture.astype(np.float32) + alpha * colours.astype(np.float32)
    return mixed.round().astype(np.uint8)
