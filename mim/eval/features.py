"""Frozen features of an encoder: one vector per sample, averaged over its test views.

Pooling (MAE, Sec. A.1): the cls token after the final norm (the "dummy" token MAE's encoder
carries for exactly this), or the average of the patch tokens ("works similarly well"). A clip
seen as V test views (temporal windows x spatial crops) gets the mean of its V vectors, the
clip-level feature of space-time evaluation (Tong et al. 2022, Feichtenhofer et al. 2022).
"""
from __future__ import annotations

import torch
from torch import nn

from mim.data import MimDataset
from mim.eval.loaders import batches
from mim.models.model import Encoded, MaskedAutoencoder


def pool_name(requested: str, model: MaskedAutoencoder) -> str:
    if requested == "auto":
        return "cls" if model.num_prefix else "avg"
    if requested == "cls" and not model.num_prefix:
        raise ValueError("eval.pool: 'cls' but this model has no cls token; use avg")
    return requested


def pool(encoded: Encoded, how: str) -> torch.Tensor:
    """Encoded tokens [B, prefix + L, D] -> [B, D]."""
    if how == "cls":
        return encoded.tokens[:, 0]
    return encoded.tokens[:, encoded.num_prefix:].mean(dim=1)


def split_views(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, int]:
    """[B, C, *s] -> (same, 1); [B, V, C, *s] -> ([B V, C, *s], V)."""
    if x.dim() == rank + 2:
        return x, 1
    views = x.shape[1]
    return x.flatten(0, 1), views  # 'b v c ... -> (b v) c ...'


def embed(model: MaskedAutoencoder, x: torch.Tensor, how: str) -> torch.Tensor:
    """x [B, (V,) C, *spatial] -> features [B, D] (views averaged)."""
    flat, views = split_views(x, model.tokenizer.rank)
    feats = pool(model.encode(flat), how)  # [B V, D]
    return feats.reshape(-1, views, feats.shape[-1]).mean(dim=1)  # '(b v) d -> b d' (mean)


@torch.no_grad()
def extract(model: nn.Module, dataset: MimDataset, how: str, batch_size: int,
            num_workers: int, device: torch.device, seed: int = 0,
            epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (fp32, CPU) and labels [N] of every item, in dataset order."""
    model.eval()
    feats, labels = [], []
    for x, y in batches(dataset, batch_size, num_workers, seed, epoch):
        feats.append(embed(model, x.to(device), how).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, top: int = 1) -> float:
    """Percentage of rows whose label is among the ``top`` highest scores [N, classes]."""
    top = min(top, scores.shape[1])
    hits = (scores.topk(top, dim=1).indices == labels[:, None]).any(dim=1)
    return 100.0 * hits.float().mean().item()
