"""Core data contract: resumable sharded order, seeded masks in the collate, skipping."""
from __future__ import annotations

from itertools import islice

import mim  # noqa: F401
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torch.utils.data import DataLoader

from mim.data import (MaskingCollate, MimDataset, Sample, SeededView, StreamSampler,
                      UnreadableSample, sample_seed)
from mim.data.failures import FIX_FILES, DataLoadError, data_stop
from mim.masking import RandomMask


def take(sampler: StreamSampler, n: int) -> list[tuple[int, int]]:
    return list(islice(iter(sampler), n))


@given(num_items=st.integers(1, 40), batch=st.integers(1, 8), seed=st.integers(0, 2**20),
       k=st.integers(0, 100))
def test_resume_continues_the_same_stream(num_items, batch, seed, k):
    if batch > num_items:
        return
    full = take(StreamSampler(num_items, seed, batch), k + 30)
    assert full == take(StreamSampler(num_items, seed, batch), k + 30)  # deterministic
    resumed = take(StreamSampler(num_items, seed, batch, start=k), 30)
    assert resumed == full[k:]


@given(num_items=st.integers(2, 40), b=st.integers(1, 5), world=st.integers(2, 3),
       seed=st.integers(0, 2**20), steps=st.integers(1, 12), resume_steps=st.integers(0, 6))
def test_ranks_split_the_global_order(num_items, b, world, seed, steps, resume_steps):
    if b * world > num_items:
        return
    start = resume_steps * b * world  # the loop resumes at step boundaries (global count)
    single = take(StreamSampler(num_items, seed, b * world, start=start), steps * b * world)
    per_rank = [take(StreamSampler(num_items, seed, b, rank=r, world_size=world, start=start),
                     steps * b) for r in range(world)]
    interleaved = [item for s in range(steps) for r in range(world)
                   for item in per_rank[r][s * b:(s + 1) * b]]
    assert interleaved == single  # indices and per-sample seeds


@given(num_items=st.integers(1, 50), batch=st.integers(1, 8), seed=st.integers(0, 2**20))
def test_epochs_are_permutations(num_items, batch, seed):
    if batch > num_items:
        return
    sampler = StreamSampler(num_items, seed, batch)
    per_epoch = num_items // batch * batch
    assert sampler.per_epoch == per_epoch
    items = take(sampler, 3 * per_epoch)
    for e in range(3):
        epoch = [i for i, _ in items[e * per_epoch:(e + 1) * per_epoch]]
        assert len(set(epoch)) == per_epoch  # no index twice within an epoch
        assert all(0 <= i < num_items for i in epoch)
    seeds = [s for _, s in items]
    assert len(set(seeds)) == len(seeds)  # every sample position has its own randomness


def test_epochs_differ_and_seeds_matter():
    a = take(StreamSampler(64, 0, 8), 128)
    assert [i for i, _ in a[:64]] != [i for i, _ in a[64:]]
    assert a != take(StreamSampler(64, 1, 8), 128)


def test_batch_larger_than_dataset_raises():
    with pytest.raises(ValueError, match="train.batch_size"):
        StreamSampler(5, 0, local_batch=8)
    with pytest.raises(ValueError, match="train.batch_size"):
        StreamSampler(10, 0, local_batch=4, rank=0, world_size=3)  # global 12 > 10


class Numbers(MimDataset):
    """Item i is the tensor [i]; indices in ``bad`` cannot be read."""

    def __init__(self, n: int, bad=(), error=UnreadableSample):
        self.n, self.bad, self.error = n, set(bad), error

    def __len__(self) -> int:
        return self.n

    def describe(self, index: int) -> str:
        return f"/data/item{index}.bin"

    def load(self, index: int, seed: int):
        if index in self.bad:
            raise self.error(f"broken item {index}")
        return torch.tensor([float(index)]), index * 10


def test_masking_collate_masks_depend_only_on_seeds():
    policy = RandomMask(0.75)
    collate = MaskingCollate(policy, (4, 4))
    seeds = [sample_seed(0, 0, p) for p in range(3)]
    first = collate([(Sample(torch.randn(2, 4, 4), label=i), s) for i, s in enumerate(seeds)])
    again = collate([(Sample(torch.zeros(2, 4, 4)), s) for s in seeds])
    assert first.mask.shape == (3, 16) and first.mask.dtype == torch.bool
    assert first.x.shape == (3, 2, 4, 4)
    assert torch.equal(first.mask, again.mask)
    assert (first.mask.sum(1) == policy.num_masked((4, 4))).all()
    assert torch.equal(first.label, torch.tensor([0, 1, 2]))
    assert again.label.tolist() == [-1, -1, -1]
    other = collate([(Sample(torch.zeros(2, 4, 4)), s + 1) for s in seeds])
    assert not torch.equal(first.mask, other.mask)
    assert len({tuple(m.tolist()) for m in first.mask}) > 1  # samples get their own masks


def test_collate_through_seeded_view_reports_skips():
    view = SeededView(Numbers(6, bad={1}))
    collate = MaskingCollate(RandomMask(0.5), (2, 2))
    batch = collate([view[(0, 11)], view[(1, 12)]])
    assert batch.x.flatten().tolist() == [0.0, 2.0]  # item 1 replaced by item 2
    assert batch.label.tolist() == [0, 20]
    assert batch.skipped == [("/data/item1.bin", "broken item 1")]


@pytest.mark.parametrize("error", [UnreadableSample, OSError, ValueError, RuntimeError])
def test_unreadable_items_are_replaced_by_the_next(error):
    data = Numbers(6, bad={2, 3, 5}, error=error)
    ok = data[(0, 0)]
    assert ok.x.item() == 0 and ok.label == 0 and ok.skipped == []
    sample = data[(2, 7)]
    assert sample.x.item() == 4 and sample.label == 40
    assert sample.skipped == [("/data/item2.bin", "broken item 2"),
                              ("/data/item3.bin", "broken item 3")]
    wrapped = data[(5, 7)]  # wraps around to the start
    assert wrapped.x.item() == 0 and wrapped.skipped == [("/data/item5.bin", "broken item 5")]


def test_all_unreadable_raises_clearly():
    with pytest.raises(DataLoadError) as err:
        Numbers(4, bad=range(4))[(1, 0)]
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data: none of the 4 items could be read: 1 broken item 0, ")
    assert message.endswith("; " + FIX_FILES)


class Kinds(Numbers):
    """Items 0-2 too short (with a remedy), 3 empty, 4 and 5 without a kind, 6 readable."""

    def load(self, index: int, seed: int):
        if index < 3:
            raise UnreadableSample(f"too short: {index} frames", "too short", "pad them")
        if index == 3:
            raise UnreadableSample("empty file (0 bytes)", "empty")
        if index < 6:
            raise OSError("permission denied")
        return torch.tensor([float(index)]), 0


def test_unreadable_items_are_counted_by_kind_with_their_remedies():
    sample = Kinds(7)[(0, 0)]
    assert sample.x.item() == 6
    assert [s.kind for s in sample.skipped] == ["too short"] * 3 + ["empty", None, None]
    assert sample.skipped[0] == ("/data/item0.bin", "too short: 0 frames")  # still a pair
    with pytest.raises(DataLoadError) as err:
        Kinds(6)[(0, 0)]
    assert str(err.value) == ("data: none of the 6 items could be read: 3 too short, "
                              "2 permission denied, 1 empty; pad them; " + FIX_FILES)
    many = Kinds(200)
    many.max_consecutive_failures = 4
    with pytest.raises(DataLoadError, match=r"^data: none of 4 consecutive items \(of 200\) "
                                            "could be read: 3 too short, 1 empty; pad them; re"):
        many[(0, 0)]
    # a loader worker's copy of the error: the DataLoader's wrapping is stripped again
    wrapped = DataLoadError("Caught DataLoadError in DataLoader worker process 0.\nOriginal "
                            "Traceback (most recent call last):\n  File ...\n"
                            "mim.data.failures.DataLoadError: data: none of the 6 items")
    assert str(data_stop(wrapped, 1, None)) == "data: none of the 6 items"
    assert data_stop(ValueError("other"), 1, None) is None


def test_a_loader_worker_stop_is_one_line_again():
    loader = DataLoader(SeededView(Kinds(6)), batch_size=2, num_workers=1,
                        sampler=StreamSampler(6, 0, 2), collate_fn=lambda samples: samples)
    with pytest.raises(DataLoadError) as err:
        next(iter(loader))
    assert "Traceback" in str(err.value)  # how torch re-raises a worker's error
    assert str(data_stop(err.value, 1, None)) == (
        "data: none of the 6 items could be read: 3 too short, 2 permission denied, 1 empty; "
        "pad them; " + FIX_FILES)


def test_a_worker_gone_while_handing_over_a_batch_is_a_loader_stop(monkeypatch):
    """A worker killed mid-batch can break the connection before the DataLoader sees it dead:
    the ConnectionError then comes from its queue, and stops the run as a dead worker does."""
    loader = DataLoader(SeededView(Kinds(6)), batch_size=2, num_workers=1,
                        sampler=StreamSampler(6, 0, 2), collate_fn=lambda samples: samples)
    batches = iter(loader)
    try:
        def broken(*args, **kwargs):
            raise ConnectionResetError(104, "Connection reset by peer")

        monkeypatch.setattr(batches._data_queue, "get", broken)
        with pytest.raises(ConnectionResetError) as err:
            next(batches)  # the worker is alive: torch passes the error on as it is
    finally:
        batches._shutdown_workers()
    stop = data_stop(err.value, 5, "step_00000004")
    assert str(stop).startswith(
        "data loading failed before step 5: DataLoader worker connection lost "
        "(ConnectionResetError: [Errno 104] Connection reset by peer): a worker exited while "
        "handing over a batch; the last checkpoint (step_00000004) is intact"), stop
    try:  # the same error from anything else is not the loader's
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError as elsewhere:
        assert data_stop(elsewhere, 5, None) is None


def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    values = {sample_seed(s, e, p, stream) for s in range(2) for e in range(2)
              for p in range(3) for stream in ("", "mask")}
    assert len(values) == 24
    assert all(0 <= v < 2**63 for v in values)
