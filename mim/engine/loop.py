"""The training loop: micro-batches in, optimiser steps, logs, pictures and checkpoints out.

It talks only to the ``Backend`` contract (docs/ARCHITECTURE.md): no branch on which backend
runs the step.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from mim import faults
from mim.config.schema import TrainConfig
from mim.data import Batch
from mim.data.failures import ItemReports, data_stop
from mim.engine.backends.base import Backend
from mim.engine.checkpoint import Checkpoints
from mim.engine.metrics import RunLogger
from mim.engine.precision import subnormals_flushed
from mim.reconstruction import reconstruction_panels
from mim.engine.watchdog import Watchdog

log = logging.getLogger("mim")


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or Inf; the step was not applied."""


@dataclass
class LoopState:
    step: int = 0  # optimiser steps done
    samples: int = 0  # clips consumed, all ranks (reported; the data position is ``drawn``)
    skipped: int = 0  # unreadable items replaced so far (all ranks)
    padded: int = 0  # items too small for a sample, filled up so far (all ranks)
    items: int = 0  # items read so far (all ranks)
    nonfinite_skips: int = 0  # steps skipped for a non-finite loss or gradient
    rng: dict[str, Any] = field(default_factory=dict)
    # the data position in items, so that another process count continues it (engine/reshape.py):
    # {"micro_steps": n, "items": per source, all ranks}; empty in older checkpoints (use step)
    drawn: dict[str, Any] = field(default_factory=dict)

    def capture_rng(self) -> None:
        # numpy's key array as a list of ints: checkpoints are read with weights_only=True,
        # which refuses pickled numpy arrays
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        self.rng = {"torch": torch.get_rng_state(),
                    "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
                    "python": random.getstate()}
        if torch.cuda.is_available():
            self.rng["cuda"] = torch.cuda.get_rng_state_all()

    def restore_rng(self) -> None:
        if not self.rng:
            return
        torch.set_rng_state(self.rng["torch"])
        name, keys, pos, has_gauss, gauss = self.rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        random.setstate(self.rng["python"])
        if "cuda" in self.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng["cuda"])

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "samples": self.samples, "skipped": self.skipped,
                "padded": self.padded, "items": self.items,
                "nonfinite_skips": self.nonfinite_skips, "rng": self.rng,
                "drawn": self.drawn}


@dataclass
class LoopSettings:
    total_steps: int
    timeout: float | None  # seconds a step may take (train.timeout); None: no watchdog
    global_batch: int  # clips per micro-step across all ranks
    accum_steps: int
    log_every: int
    ckpt_every: int
    vis_every: int
    samples_per_epoch: int  # clips in one pass over every source (metrics.jsonl's epoch)


class Trainer:
    """Runs ``settings.total_steps`` optimiser steps (``fit``), one ``train_step`` at a time.

    ``train_step`` needs only the runner, the model, the backend, ``settings`` and ``state``;
    ``fit`` also the batches, the checkpoints, the logger and the picture writer. The
    non-finite and unreadable-data policies default to the schema's (``TrainConfig``).
    ``drawn(stop, start, items)`` (``mim.data.stream.drawn`` of the run's feeds) counts the items
    the sources give over micro-steps; with it each checkpoint holds the data position in items, and
    ``shape`` (``mim/engine/reshape.py``) records what wrote the checkpoint. ``record``: what
    else each checkpoint carries (``mim/train.py``: the config the weights follow, the data's
    identity, the run's history of starts and resumes).
    """

    def __init__(self, runner: torch.nn.Module, model: torch.nn.Module, backend: Backend,
                 batches: Callable[[int], Iterator[Batch]] | None, settings: LoopSettings,
                 checkpoints: Checkpoints | None, logger: RunLogger | None, state: LoopState,
                 picture: Callable[[Any, int], Path | None] | None,
                 record: dict[str, Any],
                 nonfinite: str = TrainConfig.nonfinite,
                 max_nonfinite_skips: int = TrainConfig.max_nonfinite_skips,
                 max_unreadable: float = TrainConfig.max_unreadable,
                 drawn: Callable[[int, int, list[int] | None], list[int]] | None = None,
                 shape: dict[str, Any] | None = None):
        self.runner, self.model, self.backend = runner, model, backend
        self.batches, self.settings = batches, settings
        self.checkpoints, self.logger, self.state = checkpoints, logger, state
        self.picture, self.record = picture, record
        self.reports = ItemReports()
        self.nonfinite, self.max_nonfinite_skips = nonfinite, max_nonfinite_skips
        self.max_unreadable = max_unreadable
        self.drawn, self.shape = drawn, shape
        self.skips_in_a_row = 0
        self.watchdog = Watchdog(settings.timeout, lambda: f"at step {state.step + 1}")

    def fit(self) -> LoopState:
        try:
            with subnormals_flushed():
                return self._fit()
        except (RuntimeError, ConnectionError, EOFError) as exc:
            # torch's DataLoader reports a dead or stuck worker as a RuntimeError, raised from
            # its SIGCHLD handler wherever the main thread is (even inside optimizer.step), or
            # the batch's broken connection first (mim/data/failures.py, loader_failure)
            stop = data_stop(exc, self.state.step + 1, self.checkpoints.latest())
            if stop is None:
                raise
            raise stop from None

    def train_step(self, micro_batches: Iterator[Batch]) -> tuple[float, bool]:
        """One optimiser step on the next ``accum_steps`` micro-batches of ``micro_batches``
        (on the backend's device): forward and backward of each (gradients synchronised
        across ranks on the last only), one host read of the step's loss, data health and
        gradient norm, then the optimiser step, or its skip when they are not finite
        (``train.nonfinite``). Returns (the loss summed over the micro-batches, whether the
        step was applied)."""
        s, st, backend = self.settings, self.state, self.backend
        # summed on the device over the micro-batches: loss, unreadable, read and padded items
        step_stats: torch.Tensor | float = 0.0
        for i in range(s.accum_steps):
            last = i == s.accum_steps - 1
            batch = next(micro_batches)
            self.reports.tell(batch.skipped, batch.padded)
            with backend.autocast():
                out = self.runner(batch.x, batch.mask, batch.targets, batch.coords)
            loss = out.loss
            if faults.fires("loss.nan"):
                loss = loss * float("nan")
            if faults.fires("loss.inf"):
                loss = loss * float("inf")
            backend.backward(loss, boundary=last)
            if faults.fires("grad.nan"):
                next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(
                    float("nan"))
            counts = torch.tensor([len(batch.skipped), batch.items, len(batch.padded)],
                                  dtype=torch.float32)
            step_stats = step_stats + torch.cat([loss.detach().float().reshape(1),
                                                 counts.to(loss.device)])
            st.samples += s.global_batch
            self.watchdog.beat()
            if not last:
                backend.sync()  # XLA runs this micro-batch's graph; no host read
        loss_sum, finite = self._read_step(step_stats)
        if finite:
            backend.step()
            backend.sync()  # XLA runs the optimiser step's graph
            self.skips_in_a_row = 0
        else:
            self.skips_in_a_row += 1
            self._nonfinite(loss_sum, self.skips_in_a_row)  # raises unless skipping
            backend.skip_step()
            st.nonfinite_skips += 1
        self.watchdog.beat()
        st.step += 1
        return loss_sum, finite

    def _fit(self) -> LoopState:
        s, st = self.settings, self.state
        assert self.batches is not None and self.logger is not None, "fit needs the run's parts"
        # checkpoints sit on step boundaries; the backend moves batches to its device (XLA
        # overlaps the copy with the step)
        micro = st.drawn.get("micro_steps", st.step * s.accum_steps)
        items = st.drawn.get("items")  # None: this shape's count after ``micro`` micro-steps
        if items is None and self.drawn is not None:
            items = self.drawn(micro, 0, None)
        stream = self.backend.device_batches(self.batches(micro, items))
        window_loss, window_micro, window_samples, t0 = 0.0, 0, 0, time.perf_counter()
        self.skips_in_a_row = 0
        self.runner.train()
        with self.watchdog:
            while st.step < s.total_steps:
                loss_sum, finite = self.train_step(stream)
                if self.drawn is not None:
                    items = self.drawn(micro + s.accum_steps, micro, items)
                    micro += s.accum_steps
                    st.drawn = {"micro_steps": micro, "items": items}
                window_samples += s.global_batch * s.accum_steps
                if finite:
                    window_loss, window_micro = window_loss + loss_sum, window_micro + s.accum_steps
                loss_value = loss_sum / s.accum_steps
                elapsed = time.perf_counter() - t0
                rate = window_samples / max(elapsed, 1e-9)
                self.logger.progress(st.step, loss_value, self.backend.lr(), rate)
                if st.step % s.log_every == 0 or st.step == s.total_steps:
                    self.logger.record(st.step, {
                        "loss": window_loss / window_micro if window_micro else None,
                        "lr": self.backend.lr(),
                        "samples_per_s": rate, "samples": st.samples, "skipped": st.skipped,
                        "padded": st.padded, "nonfinite_skipped": st.nonfinite_skips,
                        "epoch": st.samples / s.samples_per_epoch,
                        **self.backend.precision_metrics()})  # fp16: loss_scale, overflow_steps
                    window_loss, window_micro, window_samples = 0.0, 0, 0
                    t0 = time.perf_counter()
                if st.step % s.vis_every == 0 or st.step == s.total_steps:
                    self._picture()
                if st.step % s.ckpt_every == 0 or st.step == s.total_steps:
                    self.save()
                self.watchdog.beat()
        return st

    def _read_step(self, step_stats: torch.Tensor) -> tuple[float, bool]:
        """One host read per optimiser step (all ranks agree: the values are averaged across
        them): the loss sum, the data health and the gradient norm. Returns (loss sum, finite)."""
        # None under fp16: its loss scaler skips overflows itself (mim/engine/scaler.py)
        norm = self.backend.grad_norm()
        parts = [step_stats] + ([norm.detach().float().reshape(1).to(step_stats.device)]
                                if norm is not None else [])
        mean = self.backend.mean_across_ranks(torch.cat(parts))
        self.backend.sync()  # XLA runs the traced forward and backward once, before the read
        values = mean.tolist()
        loss_sum, skipped, items, padded = values[:4]
        finite = all(math.isfinite(v) for v in [loss_sum, *values[4:]])
        st = self.state
        st.items += round(items * self.backend.world_size)
        st.skipped += round(skipped * self.backend.world_size)
        st.padded += round(padded * self.backend.world_size)
        self.reports.judge(st.skipped, st.items + st.skipped, self.max_unreadable)
        return loss_sum, finite

    def _nonfinite(self, loss_sum: float, in_a_row: int) -> None:
        what = (f"loss is {loss_sum}" if not math.isfinite(loss_sum)
                else "gradients are not finite")
        where = f"at step {self.state.step + 1}"
        latest = self.checkpoints.latest() if self.checkpoints is not None else None
        kept = f"the last good checkpoint ({latest or 'none'}) is kept"
        if self.nonfinite == "stop":
            raise NonFiniteLossError(
                f"{what} {where}; the step was not applied and {kept}; lower optim.blr, set "
                "train.clip_grad, check the data, or set train.nonfinite=skip")
        if in_a_row > self.max_nonfinite_skips:
            raise NonFiniteLossError(
                f"{what} {where}, {in_a_row} steps in a row (train.max_nonfinite_skips="
                f"{self.max_nonfinite_skips}); stopping, {kept}")
        log.warning("%s %s; step skipped (train.nonfinite=skip, %d in a row)", what, where,
                    in_a_row)

    def _picture(self) -> None:
        # every rank runs the forward: under ZeRO-3 it gathers the weight shards, a collective;
        # only the main rank writes the picture
        self.model.eval()
        with self.backend.autocast():
            path = self.picture(self.model, self.state.step)
        self.model.train()
        if path is not None:
            log.debug("reconstruction picture: %s", path)

    def save(self) -> Path:
        self.state.capture_rng()
        client = {"loop": self.state.as_dict(), **self.record, "shape": self.shape}
        return self.checkpoints.save(self.state.step, self.backend, client)


def picture_writer(spec: Any, data_cfg: Any, samples: Batch, out_dir: Path, logger: RunLogger,
                   is_main: bool) -> Callable[[torch.nn.Module, int], Path | None]:
    """A function that renders reconstructions of fixed ``samples`` at a given step (called on
    every rank; only the main one writes and gets a path)."""

    def write(model: torch.nn.Module, step: int) -> Path | None:
        device = next(model.parameters()).device
        panels = reconstruction_panels(model, samples.x.to(device), samples.mask.to(device),
                                       None if samples.targets is None else
                                       samples.targets.to(device),  # decoder masking's part
                                       None if samples.coords is None else
                                       samples.coords.to(device))
        if not is_main:
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        path = spec.render(panels, data_cfg, out_dir / f"step_{step:08d}")
        if path.suffix == ".png":
            from PIL import Image
            logger.image("reconstruction", np.asarray(Image.open(path).convert("RGB")), step)
        return path

    return write
