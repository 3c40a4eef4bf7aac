"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of Wu et al. 2018 (instance discrimination) as DINO (Caron et al. 2021) runs it:
features are L2-normalised, each test sample takes its k most cosine-similar training samples,
and each neighbour votes for its class with weight exp(similarity / T). k and T are the knobs
(DINO: k = 20, T = 0.07).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_scores(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int,
               temperature: float, num_classes: int, chunk: int = 1024) -> torch.Tensor:
    """train [N, D], train_labels [N], test [M, D] -> class scores [M, classes]."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, test.shape[0], chunk):
        sims = test[start:start + chunk] @ train.T  # [m, N] cosine similarities
        top, index = sims.topk(k, dim=1)  # [m, k]
        weights = (top / temperature).exp()  # [m, k]
        votes = F.one_hot(train_labels[index], num_classes).float()  # [m, k, classes]
        scores.append((votes * weights.unsqueeze(-1)).sum(dim=1))  # [m, classes]
    return torch.cat(scores)
