"""Batches of labelled samples for evaluation: seeded epochs, views kept together.

A sample is ``x [C, *spatial]`` or, for test views, ``x [V, C, *spatial]``; a batch stacks them
(``[B, C, *spatial]`` / ``[B, V, C, *spatial]``). The augmentation of every training sample is a
function of (seed, epoch, position), as in pretraining. Unreadable items are replaced by the
dataset (and counted).
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from mim.data import MimDataset, Sample, sample_seed

log = logging.getLogger("mim")


class _Keyed(Dataset):
    def __init__(self, dataset: MimDataset, keys: list[tuple[int, int]]):
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Sample:
        return self.dataset[self.keys[i]]


def _collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, int]:
    x = torch.stack([s.x for s in samples])  # [B, (V,) C, *spatial]
    if isinstance(samples[0].label, torch.Tensor):  # label maps (segmentation): [B, *spatial]
        labels = torch.stack([s.label for s in samples])
    else:
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)  # [B]
    return x, labels, sum(len(s.skipped) for s in samples)


def batches(dataset: MimDataset, batch_size: int, num_workers: int, seed: int = 0,
            epoch: int = 0, shuffle: bool = False,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, labels) batches over ``dataset``; a seeded permutation per epoch when ``shuffle``."""
    order = list(range(len(dataset)))
    if shuffle:
        g = torch.Generator().manual_seed(sample_seed(seed, epoch, -1, "eval-order"))
        order = torch.randperm(len(dataset), generator=g).tolist()
    keys = [(index, sample_seed(seed, epoch, position, "eval")) for position, index in
            enumerate(order)]
    loader = DataLoader(_Keyed(dataset, keys), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate, drop_last=drop_last,
                        persistent_workers=False)
    skipped = 0
    for x, labels, replaced in loader:
        skipped += replaced
        yield x, labels
    if skipped:
        log.warning("%d unreadable items were replaced by their neighbours", skipped)
