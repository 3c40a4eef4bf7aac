"""The batch stream: one or several sources, mixed per micro-step, resumable at any step."""
from __future__ import annotations

import itertools

import torch

from mim.data import MaskingCollate, MimDataset
from mim.masking import RandomMask
from mim.stream import Feed, Source, choose, make_stream


class Ramp(MimDataset):
    """Items whose value encodes (source tag, index): easy to trace through the stream."""

    def __init__(self, n: int, tag: int, shape: tuple[int, ...]):
        self.n, self.tag, self.shape = n, tag, shape

    def __len__(self) -> int:
        return self.n

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        return torch.full(self.shape, float(self.tag * 1000 + index)), self.tag


def feeds(weights=(0.5, 0.5)) -> list[Feed]:
    a = Source("a", Ramp(10, 1, (1, 4, 4)), (1, 4, 4), weight=weights[0])
    b = Source("b", Ramp(7, 2, (1, 2, 4, 4)), (1, 2, 4, 4), weight=weights[1])
    return [Feed(a, MaskingCollate(RandomMask(0.5), (2, 2)), 2),
            Feed(b, MaskingCollate(RandomMask(0.5), (1, 2, 2)), 3)]


def trace(batches) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in b.x.flatten(1)[:, 0]) for b in batches]


def test_choice_is_seeded_and_follows_the_weights():
    picks = [choose(7, n, [0.25, 0.75]) for n in range(4000)]
    assert picks == [choose(7, n, [0.25, 0.75]) for n in range(4000)]
    assert 0.2 < picks.count(0) / 4000 < 0.3
    assert picks != [choose(8, n, [0.25, 0.75]) for n in range(4000)]
    assert {choose(7, n, [1.0]) for n in range(100)} == {0}


def test_each_batch_comes_whole_from_one_source_with_its_own_shape_and_mask():
    stream = make_stream(feeds(), seed=3, rank=0, world_size=1, workers=0, pin_memory=False)
    seen = set()
    for batch in itertools.islice(stream(0), 30):
        tags = set((batch.x.flatten(1)[:, 0] // 1000).long().tolist())
        assert len(tags) == 1
        tag = tags.pop()
        seen.add(tag)
        assert batch.x.shape[1:] == ((1, 4, 4) if tag == 1 else (1, 2, 4, 4))
        assert batch.mask.shape == ((2, 4) if tag == 1 else (3, 4))
    assert seen == {1, 2}


def test_resuming_at_any_micro_step_continues_the_same_stream():
    stream = make_stream(feeds((0.3, 0.7)), seed=5, rank=0, world_size=1, workers=0,
                         pin_memory=False)
    full = trace(itertools.islice(stream(0), 40))
    for start in (1, 7, 23):
        assert trace(itertools.islice(stream(start), 40 - start)) == full[start:]


def test_a_single_source_resumes_from_its_position():
    only = feeds((1.0, 0.0))[0]
    stream = make_stream([only], seed=1, rank=0, world_size=1, workers=0, pin_memory=False)
    full = trace(itertools.islice(stream(0), 12))
    assert trace(itertools.islice(stream(5), 7)) == full[5:]
