"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, progress bar."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger("mim")
METRICS_FILE = "metrics.jsonl"


def truncate_after(path: Path, step: int) -> None:
    """Drop records of steps after ``step`` (a resumed run replays them), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


class RunLogger:
    """Writes only on the main rank; every method is a no-op elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, total_steps: int, start_step: int):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._tb = None
        self._bar = None
        if not enabled:
            return
        truncate_after(self.path, start_step)
        self._file = open(self.path, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except ImportError as exc:  # tensorboard is a dependency; keep training without it
            log.warning("TensorBoard logging off: %s", exc)
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         mininterval=1.0)
        self._last = (time.perf_counter(), start_step)

    def progress(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                                  samples_s=f"{samples_per_s:.1f}", refresh=False)

    def record(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}", value, step)

    def image(self, tag: str, array_hwc: Any, step: int) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, array_hwc, step, dataformats="HWC")

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()
