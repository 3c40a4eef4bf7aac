"""The batch stream of a run: one or several data sources, mixed per micro-step.

Every run trains from a list of ``Source``s; an ordinary modality is a list of one. With several
(OmniMAE, Girdhar et al. 2022: images and clips into one encoder), each micro-step draws its
whole batch from one source, chosen by a seeded draw weighted by ``Source.weight``, so batches
keep static shapes. The choice for micro-step ``n`` is a pure function of ``(seed, n)``. The data
position of a run is the micro-steps drawn and the items each source has given (all ranks): a
checkpoint stores it (``drawn``), so a run resumed with another number of processes continues the
global order where it stopped; a checkpoint without it is replayed from its step count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader

from mim.data.dataset import (Batch, MaskingCollate, MimDataset, SeededView, StreamSampler,
                              items_per_epoch, sample_seed)


@dataclass
class Source:
    name: str
    dataset: MimDataset
    sample_shape: tuple[int, ...]  # (C, *spatial) as the tokenizer sees it
    mask: Any = None  # a mask policy; None: the run's ``mask``
    weight: float = 1.0  # share of the micro-steps
    views: int = 1  # clips per item (repeated sampling)


def choose(seed: int, micro_step: int, weights: list[float]) -> int:
    """Index of the source that feeds ``micro_step`` (0 when there is one source)."""
    if len(weights) == 1:
        return 0
    u = sample_seed(seed, micro_step, 0, "source") / 2**63 * sum(weights)
    for index, weight in enumerate(weights):
        u -= weight
        if u < 0:
            return index
    return len(weights) - 1


@dataclass
class Feed:
    """One source made ready: its masking collate and items drawn per process and step, and
    the sample shape of each global position where the size changes (``mim/data/resolution.py``)."""

    source: Source
    collate: MaskingCollate
    items: int
    shape_at: Callable[[int], tuple[int, ...]] | None = None

    def per_epoch(self, world_size: int) -> int:
        """Items of one pass over the source, all ranks, cut to whole global batches."""
        return items_per_epoch(len(self.source.dataset), self.items * world_size)


def drawn(feeds: list[Feed], seed: int, world_size: int, stop: int, start: int = 0,
          items: list[int] | None = None) -> list[int]:
    """Items each source has given, all ranks, once micro-steps ``start`` to ``stop - 1`` are
    drawn on top of ``items`` (the counts at micro-step ``start``; None: none drawn)."""
    done = list(items) if items is not None else [0] * len(feeds)
    if len(feeds) == 1:
        done[0] += (stop - start) * feeds[0].items * world_size
        return done
    weights = [f.source.weight for f in feeds]
    for step in range(start, stop):
        index = choose(seed, step, weights)
        done[index] += feeds[index].items * world_size
    return done


def epoch_steps(feeds: list[Feed], seed: int, world_size: int,
                accum_steps: int) -> tuple[int, dict[str, int | None]]:
    """(optimiser steps in one epoch: as many micro-steps as every source's items take, each at
    its own batch; per source: the steps until it has been read once at its share of the
    micro-steps, None for a weight of 0). One source: its steps per pass, as a plain loader."""
    total_weight = sum(f.source.weight for f in feeds)
    total, by_source = 0, {}
    for feed in feeds:
        micro = feed.per_epoch(world_size) // (feed.items * world_size)  # steps of one pass
        total += micro
        share = feed.source.weight / total_weight
        by_source[feed.source.name] = (max(1, round(micro / share / accum_steps))
                                       if share > 0 else None)
    return max(1, total // accum_steps), by_source


def step_sources(feeds: list[Feed], seed: int, start: int, stop: int) -> dict[str, int]:
    """Micro-steps ``start`` to ``stop - 1`` per source that fed them (``choose``)."""
    weights = [f.source.weight for f in feeds]
    counts: dict[str, int] = {}
    for step in range(start, stop):
        name = feeds[choose(seed, step, weights)].source.name
        counts[name] = counts.get(name, 0) + 1
    return counts


class SourceRecords:
    """A run logger whose records also say which source fed the logged step (``source``: a
    name, or names joined by '+' when its micro-steps mixed) and the micro-steps each source
    fed since the previous record (``source_steps``); a several-source run's only. Step ``n``
    runs micro-steps ``offset + (n - 1) * accum`` on (``offset``: a resumed run's data position
    minus its steps, non-zero after a resume on another shape)."""

    def __init__(self, logger: Any, feeds: list[Feed], seed: int, accum_steps: int,
                 offset: int, last_step: int):
        self.logger, self.feeds, self.seed = logger, feeds, seed
        self.accum, self.offset, self.last = accum_steps, offset, last_step

    def _micro(self, step: int) -> int:
        return self.offset + step * self.accum

    def record(self, step: int, values: dict[str, Any]) -> None:
        this = step_sources(self.feeds, self.seed, self._micro(step - 1), self._micro(step))
        window = step_sources(self.feeds, self.seed, self._micro(self.last), self._micro(step))
        self.last = step
        self.logger.record(step, {**values, "source": "+".join(sorted(this)),
                                  "source_steps": window})

    def __getattr__(self, name: str) -> Any:  # everything else is the logger's
        return getattr(self.logger, name)


def make_stream(feeds: list[Feed], seed: int, rank: int, world_size: int, workers: int,
                pin_memory: bool, timeout: float | None = None) -> Callable[..., Iterator[Batch]]:
    """A function giving the batch stream that starts at micro-step ``start``, where the sources
    have given ``items`` (all ranks; None: as this shape would have after ``start`` micro-steps).
    With loader workers, a batch that takes longer than ``timeout`` seconds raises (a stuck
    worker)."""
    weights = [f.source.weight for f in feeds]

    def loader(feed: Feed, start: int) -> Iterator[Batch]:
        sampler = StreamSampler(len(feed.source.dataset), seed, feed.items, rank, world_size,
                                start, feed.shape_at)
        return iter(DataLoader(SeededView(feed.source.dataset), batch_size=feed.items,
                               sampler=sampler, collate_fn=feed.collate, num_workers=workers,
                               persistent_workers=workers > 0, pin_memory=pin_memory,
                               timeout=timeout if workers > 0 and timeout else 0))

    def batches(start: int, items: list[int] | None = None) -> Iterator[Batch]:
        done = items if items is not None else drawn(feeds, seed, world_size, start)
        streams: list[Iterator[Batch] | None] = [None] * len(feeds)
        step = start
        while True:
            index = choose(seed, step, weights)
            if streams[index] is None:  # opened on first use: an unused source costs nothing
                streams[index] = loader(feeds[index], done[index])
            yield next(streams[index])
            step += 1

    return batches
