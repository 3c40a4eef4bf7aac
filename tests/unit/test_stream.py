"""The batch stream: one or several sources, mixed per micro-step, resumable at any step."""
from __future__ import annotations

import itertools

import pytest
import torch

from mim.data import MaskingCollate, MimDataset, StreamSampler
from mim.masking import RandomMask
from mim.data.stream import Feed, Source, SourceRecords, choose, drawn, epoch_steps, make_stream


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


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_another_process_count_continues_each_sources_global_order(before: int, after: int):
    """A run stopped at micro-step 9 on ``before`` processes resumes on ``after`` from the
    items each source gave (``drawn``): every source's items, gathered over the ranks, are its
    global order without a gap or a repeat, and the source choices continue."""
    # 24 items cut to 24 per epoch by every global batch used here (2, 4, 3, 6)
    a = Source("a", Ramp(24, 1, (1, 4, 4)), (1, 4, 4), weight=0.4)
    b = Source("b", Ramp(24, 2, (1, 2, 4, 4)), (1, 2, 4, 4), weight=0.6)
    both = [Feed(a, MaskingCollate(RandomMask(0.5), (2, 2)), 2),
            Feed(b, MaskingCollate(RandomMask(0.5), (1, 2, 2)), 3)]
    seed, stop, total = 4, 9, 20

    def gathered(world: int, start: int, count: int, items=None) -> list[tuple[int, ...]]:
        ranks = [trace(itertools.islice(make_stream(both, seed, r, world, 0, False)(start, items),
                                        count)) for r in range(world)]
        return [sum(step, ()) for step in zip(*ranks)]  # each micro-step, rank 0 first

    steps = gathered(before, 0, stop) + gathered(
        after, stop, total - stop, drawn(both, seed, before, stop))
    tags = [{v // 1000 for v in step} for step in steps]
    assert tags == [{choose(seed, n, [0.4, 0.6]) + 1} for n in range(total)]
    for tag in (1, 2):
        got = [v % 1000 for step in steps for v in step if v // 1000 == tag]
        order = StreamSampler(24, seed, 1)
        want = [index for index, _ in itertools.islice(iter(order), len(got))]
        assert got == want
    # the positions the stream counts are the ones a checkpoint records
    counts = [sum(len(step) for step, t in zip(steps, tags) if t == {tag}) for tag in (1, 2)]
    assert drawn(both, seed, after, total, stop, drawn(both, seed, before, stop)) == counts


def test_an_epoch_counts_every_source_and_each_source_says_its_own():
    # a: 10 items, 2 per micro-step -> 5 micro-steps a pass; b: 7 items cut to 6, 3 a step -> 2
    total, by_source = epoch_steps(feeds((0.5, 0.5)), seed=0, world_size=1, accum_steps=1)
    assert total == 5 + 2 and by_source == {"a": 10, "b": 4}  # at half the micro-steps each
    total, by_source = epoch_steps(feeds((1.0, 0.0)), seed=0, world_size=1, accum_steps=1)
    assert total == 7 and by_source == {"a": 5, "b": None}  # b is never drawn
    assert epoch_steps(feeds()[:1], seed=0, world_size=1, accum_steps=2) == (2, {"a": 2})


class Records:
    def __init__(self):
        self.rows = []

    def record(self, step, values):
        self.rows.append((step, values))


def test_each_record_of_a_mixed_run_names_the_sources_of_its_steps():
    fs, inner = feeds((0.3, 0.7)), Records()
    logger = SourceRecords(inner, fs, seed=5, accum_steps=2, offset=0, last_step=0)
    for step in (1, 2, 5):
        logger.record(step, {"loss": 1.0})
    picks = ["ab"[choose(5, n, [0.3, 0.7])] for n in range(10)]
    assert inner.rows[0][1]["source"] == "+".join(sorted(set(picks[0:2])))
    assert inner.rows[2][1]["source"] == "+".join(sorted(set(picks[8:10])))
    window = inner.rows[2][1]["source_steps"]  # micro-steps 4-9: steps 3 to 5
    assert window == {n: picks[4:10].count(n) for n in set(picks[4:10])}
    assert inner.rows[0][1]["loss"] == 1.0
