"""SPMD sharding for ``backend=xla``: the device mesh, which axis of a weight to shard, and the
partition specs of a batch.

Under XLA SPMD (GSPMD, Xu et al. 2021) one process per host traces the program for the whole
global batch; ``mark_sharding`` annotates how tensors are split over a device mesh and the
compiler inserts the collectives. mim uses a 1-D mesh over every device of every host, axis
``data``:

- ``sharding=data``: batches split along the batch axis, weights replicated (data parallel; the
  compiler all-reduces the gradients).
- ``sharding=fsdp``: batches split as above and every weight split along one of its axes over
  the same devices (ZeRO-3 / FSDP in SPMD form, as torch_xla's FSDPv2): each device holds
  1/N of the weights, gradients and, by propagation, of AdamW's moments; the compiler gathers
  a weight where it is used.

torch_xla is imported inside the functions: the core imports without it.
"""
from __future__ import annotations

from typing import Any

import torch

AXIS = "data"


def shard_axis(shape: torch.Size | tuple[int, ...], num_devices: int) -> int | None:
    """The axis to split a weight of ``shape`` along over ``num_devices``: the largest axis the
    count divides (ties: the first), or None (replicate: biases, norms, odd sizes)."""
    best = None
    for axis, size in enumerate(shape):
        if size % num_devices == 0 and size >= num_devices:
            if best is None or size > shape[best]:
                best = axis
    return best


def partition_spec(ndim: int, axis: int | None) -> tuple[str | None, ...]:
    """``(None, .., "data", .., None)``: split ``axis`` of an ``ndim``-tensor over the mesh."""
    return tuple(AXIS if i == axis else None for i in range(ndim))


def make_mesh() -> Any:
    """A 1-D mesh over every device of every host (``torch_xla.distributed.spmd.Mesh``)."""
    import numpy as np
    import torch_xla.distributed.spmd as xs
    import torch_xla.runtime as xr

    count = xr.global_runtime_device_count()
    return xs.Mesh(np.arange(count), (count,), (AXIS,))


def shard_parameters(model: torch.nn.Module, mesh: Any) -> dict[str, int | None]:
    """Annotate every parameter of ``model`` (already on the XLA device) for FSDP; returns the
    chosen axis per parameter name (None = replicated)."""
    import torch_xla.distributed.spmd as xs

    count = mesh.size()
    chosen = {}
    for name, param in model.named_parameters():
        axis = shard_axis(param.shape, count)
        chosen[name] = axis
        if axis is not None:
            xs.mark_sharding(param, mesh, partition_spec(param.dim(), axis))
    return chosen


def batch_specs(example: dict[str, torch.Tensor], mesh: Any) -> dict[str, Any]:
    """Split every tensor of a batch (as a dict) along its first (batch) axis."""
    import torch_xla.distributed.spmd as xs

    return {key: xs.ShardingSpec(mesh, partition_spec(value.dim(), 0))
            for key, value in example.items()}
