"""The pure parts of SPMD sharding (``mim/engine/backends/xla/sharding.py``): which axis of a
weight to split and the partition specs. The real sharding runs in ``tests/e2e/test_xla.py``."""
from __future__ import annotations

import pytest

from mim.engine.backends.xla.sharding import AXIS, partition_spec, shard_axis


@pytest.mark.parametrize("shape, devices, want", [
    ((768, 3, 16, 16), 4, 0),     # patch conv: the output channels
    ((2304, 768), 8, 0),          # qkv: the larger of two divisible axes
    ((768, 3072), 8, 1),          # mlp fc1 transposed layout: the larger axis
    ((1, 1, 768), 4, 2),          # cls token: only the last axis divides
    ((3, 5), 4, None),            # nothing divides: replicated
    ((2,), 4, None),              # smaller than the device count: replicated
    ((512, 512), 1, 0),           # one device: trivially "split"
])
def test_shard_axis(shape, devices, want):
    assert shard_axis(shape, devices) == want
    if want is not None:
        assert shape[want] % devices == 0


def test_partition_spec():
    assert partition_spec(4, 0) == (AXIS, None, None, None)
    assert partition_spec(2, 1) == (None, AXIS)
    assert partition_spec(3, None) == (None, None, None)
