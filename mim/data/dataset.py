"""Data contract of the core: samples, skipping of unreadable items, resumable order, masking.

Every random choice about a sample (its augmentation, its mask) is a pure function of
``(seed, epoch, position in epoch)``. Resuming therefore needs only the data position (the
items each source has given, ``LoopState.drawn``), and gives the same batches whatever the
number of loader workers.
Shapes: C channels, L tokens, B batch.
"""
from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from mim import faults
from mim.data.failures import none_readable
from mim.masking import DecoderMasking, MaskPolicy, nodata_cells, nodata_first

log = logging.getLogger("mim.data")


class UnreadableSample(Exception):
    """Raised by a dataset's ``load`` with the reason an item cannot be used; optionally the
    ``kind`` of problem (items are counted by kind when data stops a run, e.g. "empty") and its
    ``remedy`` (e.g. the config key that accepts such items)."""

    def __init__(self, reason: str, kind: str | None = None, remedy: str | None = None):
        super().__init__(reason)
        self.kind, self.remedy = kind, remedy


class Skipped(tuple):
    """An item replaced because it was unreadable: the pair ``(path, reason)``, plus the
    ``kind`` and ``remedy`` its ``UnreadableSample`` gave (None otherwise)."""

    def __new__(cls, path: str, reason: str, kind: str | None = None,
                remedy: str | None = None) -> "Skipped":
        item = super().__new__(cls, (path, reason))
        item.kind, item.remedy = kind, remedy
        return item

    def __reduce__(self):  # to the main process from a loader worker, kind and remedy kept
        return Skipped, (self[0], self[1], self.kind, self.remedy)


# what a dataset's ``load`` raises for one bad item (a decoder's complaint included)
LOAD_ERRORS = (UnreadableSample, OSError, ValueError, RuntimeError, SyntaxError)


@dataclass
class Sample:
    x: torch.Tensor  # [C, *spatial]
    label: int = -1  # -1: unlabelled
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) replaced
    padded: list[tuple[str, str]] = field(default_factory=list)  # (path, how) filled up
    # [T, 4]: per date (year, day of the year), and the place (latitude, longitude) on every
    # row, NaN where unknown (``MimDataset.coords``); None: the dataset gives none
    coords: torch.Tensor | None = None


@dataclass
class Batch:
    x: torch.Tensor  # [B, C, *spatial]
    mask: torch.Tensor  # [B, L] bool, True = masked, same count per row
    label: torch.Tensor  # [B] int64, -1 where unlabelled
    skipped: list[tuple[str, str]] = field(default_factory=list)
    targets: torch.Tensor | None = None  # [B, L] bool: masked tokens to reconstruct (None: all)
    items: int = 0  # dataset items read for this batch (B / views); skipped ones not counted
    padded: list[tuple[str, str]] = field(default_factory=list)  # (path, how) filled up
    coords: torch.Tensor | None = None  # [B, T, 4]: the samples' dates and places (or None)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(move(self.x), move(self.mask), move(self.label), self.skipped,
                     move(self.targets), self.items, self.padded, move(self.coords))


def sample_seed(seed: int, epoch: int, position: int, stream: str = "") -> int:
    """A 63-bit seed for one sample's randomness, independent of workers and world size."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{position}/{stream}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


class MimDataset(Dataset, ABC):
    """Base for modality datasets: indexed by ``(index, seed)``, skipping unreadable items.

    Subclasses implement ``__len__``, ``describe(index)`` (a path, for messages) and
    ``load(index, seed) -> (x, label)``, or, where an item too small for a sample is filled up,
    ``load_padded`` (how it was padded is reported in ``Sample.padded``), raising
    ``UnreadableSample`` (or any I/O or decode error) for an item that cannot be used.
    The item is then replaced by the next readable one and reported in ``Sample.skipped``;
    when none of the items tried can be read, the ``DataLoadError`` counts them by reason.
    """

    max_consecutive_failures = 64
    # samples may hold NaN where the data has no value (rasters with data.nodata): the collate
    # masks such patches first, and the model built for the run scores only values of the data
    nodata: bool = False

    def describe(self, index: int) -> str:
        return str(index)

    def at_shape(self, shape: tuple[int, ...]) -> "MimDataset":
        """This dataset loading samples of ``shape`` (C, *spatial): progressive resolution
        (``mim/data/resolution.py``); a dataset that supports it overrides this."""
        raise NotImplementedError(f"{type(self).__name__} loads one sample size only")

    def identity(self) -> dict:
        """What the data is, as JSON values: a checkpoint records it and a resume on other
        data is refused (``mim/config/history.py``), since the data order follows from it.
        The item count here; a dataset that knows more (its shards and their sizes, a
        manifest's hash) adds it."""
        return {"items": len(self)}

    @abstractmethod
    def __len__(self) -> int:
        """Number of items (readable or not)."""

    @abstractmethod
    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        """Item ``index`` augmented with randomness from ``seed`` -> (x [C, *spatial], label)."""

    def load_padded(self, index: int, seed: int) -> tuple[torch.Tensor, int, str | None]:
        """``load``, and how the item was filled up to the sample's size (None: it was not)."""
        x, label = self.load(index, seed)
        return x, label, None

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, seed = key
        faults.hang("load.hang")  # reliability tests: a stuck filesystem
        faults.kill("load.die")  # reliability tests: the OOM killer takes this worker
        skipped: list[tuple[str, str]] = []
        for attempt in range(min(len(self), self.max_consecutive_failures)):
            current = (index + attempt) % len(self)
            try:
                x, label, how = self.load_padded(current, seed)
            except LOAD_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
                skipped.append(Skipped(self.describe(current), reason,
                                       getattr(exc, "kind", None), getattr(exc, "remedy", None)))
                continue
            return Sample(x, label, skipped, [(self.describe(current), how)] if how else [],
                          self.coords(current))
        raise none_readable(skipped, len(self))

    def coords(self, index: int) -> torch.Tensor | None:
        """Item ``index``'s dates and place, [T, 4] (``Sample.coords``); None: none given."""
        return None


def items_per_epoch(num_items: int, global_batch: int) -> int:
    """Items of one pass over a dataset, cut to whole global batches (``drop_last``); a global
    batch larger than the dataset -> ValueError naming ``train.batch_size``."""
    per_epoch = num_items // global_batch * global_batch
    if per_epoch == 0:
        raise ValueError(f"train.batch_size: a global batch of {global_batch} is larger than the "
                         f"dataset ({num_items} items); lower train.batch_size or add data")
    return per_epoch


class StreamSampler(Sampler):
    """An endless, resumable order over a dataset, sharded across ranks.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``, cut to a multiple of the global batch
    (``drop_last``). The global order is consumed ``global_batch`` samples per micro-step; rank
    ``r`` takes the ``r``-th slice of ``local_batch`` of each. Yields ``(index, sample_seed)``,
    or ``(index, sample_seed, shape)`` with ``shape_at``: the sample shape of a global position
    (progressive resolution, ``mim/data/resolution.py``).
    """

    def __init__(self, num_items: int, seed: int, local_batch: int, rank: int = 0,
                 world_size: int = 1, start: int = 0,
                 shape_at: Callable[[int], tuple[int, ...]] | None = None):
        self.num_items, self.seed = num_items, seed
        self.local_batch, self.rank, self.world_size = local_batch, rank, world_size
        self.global_batch = local_batch * world_size
        self.per_epoch = items_per_epoch(num_items, self.global_batch)
        self.start = start  # samples already consumed (global count)
        self.shape_at = shape_at

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1, "order"))
        return torch.randperm(self.num_items, generator=g)[: self.per_epoch]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Walk the global stream from ``start`` in steps of ``global_batch``; a position maps to
        # (epoch, place in epoch). Starting mid-step (not at a multiple of the global batch) is
        # therefore fine too: the stream simply continues after ``start`` items.
        step_start, epoch, order = self.start, None, None
        while True:
            first = step_start + self.rank * self.local_batch
            for position in range(first, first + self.local_batch):
                e, p = divmod(position, self.per_epoch)
                if e != epoch:
                    epoch, order = e, self.epoch_order(e)
                key = int(order[p]), sample_seed(self.seed, epoch, p)
                yield key if self.shape_at is None else (*key, self.shape_at(position))
            step_start += self.global_batch


class MaskingCollate:
    """Stacks samples and draws each clip's mask, in the loader worker (static counts).

    A sample may carry several views of one item (repeated sampling, Feichtenhofer et al. 2022:
    ``x [K, C, *spatial]``); every view becomes a row of the batch with its own mask.
    Masks are drawn on ``grid``, or on ``grids[spatial size]`` for samples of another size
    (progressive resolution: every sample of a batch has one size).
    """

    def __init__(self, policy: MaskPolicy, grid: tuple[int, ...],
                 grids: dict[tuple[int, ...], tuple[int, ...]] | None = None,
                 nodata: bool = False, sample_dims: int | None = None):
        self.policy, self.grid = policy, tuple(grid)
        self.grids = dict(grids or {})
        self.nodata = nodata  # samples hold NaN for no data: such patches masked first
        # axes of one sample, (C, *spatial): the grid's rank + 1 unless the grid has leading
        # band or group axes (a tokenizer's ``leading_axes``)
        self.sample_dims = len(self.grid) + 1 if sample_dims is None else sample_dims

    def _mask(self, grid: tuple[int, ...], generator: torch.Generator,
              view: torch.Tensor) -> torch.Tensor:
        """The policy's mask [L] for one view [C, *spatial]; under ``nodata`` the patches
        mostly of no data masked first (the count unchanged)."""
        mask = self.policy(grid, generator)
        mostly = nodata_cells(view, grid) if self.nodata else None
        return mask if mostly is None or not mostly.any() else nodata_first(mask, mostly,
                                                                            generator)

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """[C, *spatial] or [K, C, *spatial] -> [K, C, *spatial]."""
        return x.unsqueeze(0) if x.dim() == self.sample_dims else x

    def __call__(self, samples: list[tuple[Sample, int]]) -> Batch:
        xs, masks, targets, labels, coords = [], [], [], [], []
        decoder_part = self.policy.targets if isinstance(self.policy, DecoderMasking) else None
        spatial = tuple(self._views(samples[0][0].x).shape[2:])
        grid = self.grids.get(spatial, self.grid)
        for sample, seed in samples:
            views = self._views(sample.x)
            for k in range(views.shape[0]):
                g = torch.Generator().manual_seed(sample_seed(seed, 0, k, "mask"))
                masks.append(self._mask(grid, g, views[k]))  # [L]
                if decoder_part is not None:
                    targets.append(decoder_part(grid, g, masks[-1]))  # [L]
            xs.append(views)
            labels += [sample.label] * views.shape[0]
            coords += [sample.coords] * views.shape[0]
        return Batch(
            x=torch.cat(xs),  # [B * K, C, *spatial]
            mask=torch.stack(masks),  # [B * K, L]
            label=torch.tensor(labels, dtype=torch.long),
            skipped=[item for s, _ in samples for item in s.skipped],
            targets=torch.stack(targets) if targets else None,  # [B * K, L]
            items=len(samples),
            padded=[item for s, _ in samples for item in s.padded],
            coords=None if any(c is None for c in coords) else torch.stack(coords),  # [B, T, 4]
        )


class SeededView(Dataset):
    """Passes the sample seed through to the collate function along with the sample; a key
    ``(index, seed, shape)`` loads the item at that sample shape (the dataset's ``at_shape``,
    made once per shape in each worker)."""

    def __init__(self, dataset: MimDataset):
        self.dataset = dataset
        self.shaped: dict[tuple[int, ...], MimDataset] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple) -> tuple[Sample, int]:
        index, seed, *shape = key
        dataset = self.dataset
        if shape:
            if shape[0] not in self.shaped:
                self.shaped[shape[0]] = self.dataset.at_shape(shape[0])
            dataset = self.shaped[shape[0]]
        return dataset[(index, seed)], seed
