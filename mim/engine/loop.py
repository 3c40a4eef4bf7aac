"""The training loop: micro-batches in, optimiser steps, logs, pictures and checkpoints out.

It talks only to the ``Backend`` (DESIGN.md): no branch on which backend runs the step.
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

from mim.data import Batch
from mim.engine.checkpoint import Checkpoints
from mim.engine.metrics import RunLogger
from mim.engine.visual import reconstruction_panels

log = logging.getLogger("mim")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the step was not applied."""


@dataclass
class LoopState:
    step: int = 0  # optimiser steps done
    samples: int = 0  # clips consumed, all ranks (reported; the data position is the step)
    skipped: int = 0  # unreadable items replaced so far
    rng: dict[str, Any] = field(default_factory=dict)

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
                "rng": self.rng}


@dataclass
class LoopSettings:
    total_steps: int
    global_batch: int  # clips per micro-step across all ranks
    accum_steps: int
    log_every: int
    ckpt_every: int
    vis_every: int
    samples_per_epoch: int  # clips in one pass over the (first) source


class Trainer:
    def __init__(self, runner: torch.nn.Module, model: torch.nn.Module, backend: Any,
                 batches: Callable[[int], Iterator[Batch]], settings: LoopSettings,
                 checkpoints: Checkpoints, logger: RunLogger, state: LoopState,
                 picture: Callable[[Any, int], Path | None], config_snapshot: dict[str, Any]):
        self.runner, self.model, self.backend = runner, model, backend
        self.batches, self.settings = batches, settings
        self.checkpoints, self.logger, self.state = checkpoints, logger, state
        self.picture, self.config_snapshot = picture, config_snapshot
        self._warned: set[str] = set()

    def fit(self) -> LoopState:
        s, st = self.settings, self.state
        # checkpoints sit on step boundaries; the backend moves batches to its device (XLA
        # overlaps the copy with the step)
        stream = self.backend.device_batches(self.batches(st.step * s.accum_steps))
        window_loss, window_samples, t0 = 0.0, 0, time.perf_counter()
        step_loss: torch.Tensor | float = 0.0  # summed on the device over the micro-steps
        self.runner.train()
        while st.step < s.total_steps:
            batch = next(stream)
            self._report_skipped(batch)
            with self.backend.autocast():
                out = self.runner(batch.x, batch.mask, batch.targets)
            self.backend.backward(out.loss)
            step_loss = step_loss + out.loss.detach().float()
            st.samples += s.global_batch
            window_samples += s.global_batch
            if not self.backend.at_boundary():
                self.backend.step()  # accumulates; no host read of the loss
                continue
            # one device-to-host read per optimiser step, before the step: a non-finite loss
            # stops the run with the weights of the last good step
            loss_sum = float(self.backend.mean_across_ranks(step_loss))
            step_loss = 0.0
            if not math.isfinite(loss_sum):
                raise NonFiniteLossError(
                    f"loss is {loss_sum} at step {st.step + 1}; the step was not applied and "
                    f"the last good checkpoint ({self.checkpoints.latest() or 'none'}) is kept; "
                    "lower optim.blr, set train.clip_grad, or check the data")
            stepped = self.backend.step()
            assert stepped, "backend.at_boundary() and backend.step() disagree"
            loss_value = loss_sum / s.accum_steps
            window_loss += loss_sum
            st.step += 1
            elapsed = time.perf_counter() - t0
            rate = window_samples / max(elapsed, 1e-9)
            self.logger.progress(st.step, loss_value, self.backend.lr(), rate)
            if st.step % s.log_every == 0 or st.step == s.total_steps:
                micro = window_samples / s.global_batch
                self.logger.record(st.step, {
                    "loss": window_loss / micro, "lr": self.backend.lr(),
                    "samples_per_s": rate, "samples": st.samples, "skipped": st.skipped,
                    "epoch": st.samples / s.samples_per_epoch})
                window_loss, window_samples, t0 = 0.0, 0, time.perf_counter()
            if st.step % s.vis_every == 0 or st.step == s.total_steps:
                self._picture()
            if st.step % s.ckpt_every == 0 or st.step == s.total_steps:
                self.save()
        return st

    def _report_skipped(self, batch: Batch) -> None:
        for path, reason in batch.skipped:
            if path not in self._warned:  # once per file; every occurrence is counted
                self._warned.add(path)
                log.warning("skipped unreadable item %s: %s", path, reason)
        self.state.skipped += len(batch.skipped)

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
        client = {"loop": self.state.as_dict(), "config": self.config_snapshot}
        return self.checkpoints.save(self.state.step, self.backend, client)


def picture_writer(spec: Any, data_cfg: Any, samples: Batch, out_dir: Path, logger: RunLogger,
                   is_main: bool) -> Callable[[torch.nn.Module, int], Path | None]:
    """A function that renders reconstructions of fixed ``samples`` at a given step (called on
    every rank; only the main one writes and gets a path)."""

    def write(model: torch.nn.Module, step: int) -> Path | None:
        device = next(model.parameters()).device
        panels = reconstruction_panels(model, samples.x.to(device), samples.mask.to(device))
        if not is_main:
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        path = spec.visualize(panels, data_cfg, out_dir / f"step_{step:08d}")
        if path.suffix == ".png":
            from PIL import Image
            logger.image("reconstruction", np.asarray(Image.open(path).convert("RGB")), step)
        return path

    return write
