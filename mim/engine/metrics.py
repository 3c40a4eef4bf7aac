"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), the trackers, progress bar."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mim.trackers import Trackers

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

    def __init__(self, run_dir: Path, enabled: bool, total_steps: int, start_step: int,
                 trackers: tuple[str, ...] = ("tensorboard",), config: dict | None = None,
                 history: list[dict] | None = None):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._trackers = None
        self._bar = None
        if not enabled:
            return
        truncate_after(self.path, start_step)
        self._file = open(self.path, "a", buffering=1)
        self._trackers = Trackers(list(trackers), run_dir, config or {}, start_step,
                                  history or [])
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
        self._trackers.log_metrics(step, values)

    def image(self, tag: str, array_hwc: Any, step: int) -> None:
        if self.enabled and self._trackers is not None:
            self._trackers.log_image(tag, array_hwc, step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._trackers is not None:
            self._trackers.close()
        self._file.close()
