"""The shape a checkpoint was written on, and what a resume on another shape keeps.

A shape is the backend, the number of processes and (DeepSpeed) the ZeRO stage. Every checkpoint
records the shape that wrote it beside mim's loop state, and a resume on another one says so.

What a resume on another shape keeps, and what it cannot:

- exact: the step count, the samples counted, the schedule position, the data order, and (the
  torch backend's whole state) the weights and AdamW moments as saved. Each checkpoint stores
  the data position as the micro-steps drawn and the items each source gave, all ranks
  (``LoopState.drawn``), so the resumed run draws the next items of the same global order,
  split over its own ranks.
  Which item sits at which position in an epoch, and each item's crop, flip and mask, depend
  only on the seed and that position (``mim.data``), never on the process count.
- not exact: everything after the first step. The mean of the gradients over a global batch is
  a sum in another order (another all-reduce tree, or none, and another split of a rank's
  micro-batch), so float rounding differs and the runs drift apart by rounding from there; a
  changed process count also changes the global batch per micro-step (``train.batch_size`` is
  per process), hence the learning rate when it is derived from ``optim.blr``. An epoch is cut
  to a multiple of the global batch (``StreamSampler``): when the old and new global batches cut
  the dataset at different lengths, the epoch boundary moves by less than one global batch.
- DeepSpeed on another ZeRO stage (1-3) or process count goes through DeepSpeed's universal
  checkpoint (``mim/engine/backends/deepspeed/universal.py``). Exact there too: the fp32 master
  weights, AdamW's moments and step count, each parameter group's settings, the engine's
  counters; so the run agrees with an uninterrupted one up to the rounding above (tested: 2
  processes ZeRO-3, then 1 process ZeRO-3, then 2 processes ZeRO-2, within 1e-5 relative).
  ZeRO-0 checkpoints resume only on their own stage and process count (the universal checkpoint
  covers ZeRO 1-3).
- ``backend=torch`` and ``backend=deepspeed`` (ZeRO 1-3) resume each other's checkpoints, with
  the universal checkpoint as the interchange (``deepspeed/from_torch``, ``to_torch``): both run
  the same torch AdamW, so the same state comes through exactly and the run agrees with an
  uninterrupted one up to the rounding above (tested: torch on 2 processes, ZeRO-3 on 2, torch
  on 1, ZeRO-2 on 2, within 1e-5 relative). Another backend is not a change of what the run
  is, so its loop state (step, data position, RNG) continues as on any other shape.

A resume on the same shape restores everything and stays bit-exact.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mim.engine.backends.base import Backend

log = logging.getLogger("mim")


def shape_of(backend_name: str, backend: Backend) -> dict[str, Any]:
    """The shape of this run: its backend's name and layout (processes, ZeRO stage)."""
    return {"backend": backend_name, **backend.layout()}


def describe(shape: dict[str, Any]) -> str:
    """``backend=deepspeed ZeRO-3 on 2 ranks``."""
    stage = f" ZeRO-{shape['zero_stage']}" if shape.get("zero_stage") is not None else ""
    ranks = shape.get("world_size", "?")
    return f"backend={shape.get('backend', '?')}{stage} on {ranks} rank{'s' * (ranks != 1)}"


def note_reshape(latest: Path, client: dict[str, Any], now: dict[str, Any]) -> bool:
    """Log when checkpoint ``latest`` (its client state ``client``) was written on another
    shape than ``now``; returns whether it was. Checkpoints older than the record say nothing."""
    written = client.get("shape")
    if not written or written == now:
        return False
    log.info("resumed from %s written by %s, now %s: the data order continues exactly, the "
             "numbers only up to rounding (another reduction order)", latest, describe(written),
             describe(now))
    return True
