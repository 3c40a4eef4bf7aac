"""The tracker contract and ``Trackers``, which fans out to the chosen ones and isolates them.

A tracker that fails (not installed, server down, bad URI) warns once and is switched off: the
run never stops for it. Steps a tracker already holds (a resumed run replays the steps after its
last checkpoint) are not sent again: the last step each tracker took is kept in the run dir.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mim.registry import TRACKERS

log = logging.getLogger("mim")
STATE_FILE = "trackers.json"  # {tracker name: {"id": its run id, "step": last step logged}}


class Tracker:
    """One experiment tracker. ``start`` opens (or, with ``run_id`` from an earlier start of
    this run dir, reopens) its run and returns the id to keep; the rest log to it. The steps
    after ``start_step`` that an earlier start logged are not sent again, unless the tracker
    drops them itself (``rewrites_replayed``)."""

    rewrites_replayed = False

    def start(self, run_dir: Path, config: dict[str, Any], run_id: str | None,
              start_step: int) -> str | None:
        raise NotImplementedError

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def log_image(self, tag: str, array_hwc: Any, step: int) -> None:
        raise NotImplementedError

    def log_history(self, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
        """A resumed run: ``history`` (``mim/config/history.py``'s records, oldest first) and
        the ``config`` it now follows, whose changed keys the tracker's record of the first
        config would otherwise hide. A tracker without such a record ignores it."""

    def close(self) -> None:
        pass


class Trackers:
    """The chosen trackers of one run (main rank only); each call reaches every live one."""

    def __init__(self, names: list[str], run_dir: Path, config: dict[str, Any], start_step: int,
                 history: list[dict[str, Any]] | None = None):
        self._path = run_dir / STATE_FILE
        self._state = _read(self._path)
        self._live: dict[str, Tracker] = {}
        for name in names:
            kept = self._state.get(name, {})
            try:
                tracker = TRACKERS.get(name)()
                run_id = tracker.start(run_dir, config, kept.get("id"), start_step)
            except Exception as exc:  # noqa: BLE001  any failure of a tracker is its own
                log.warning("tracker %s off for this run: %s", name, _one_line(exc))
                continue
            # steps after the checkpoint are replayed: the tracker keeps what it took before
            self._state[name] = {"id": run_id, "step": kept.get("step", -1)}
            self._live[name] = tracker
        if history and len(history) > 1:  # a resume: what changed since the first start
            self._call("log_history", history, config, newer_only=False)
        self._save()

    def log_metrics(self, step: int, values: dict[str, Any]) -> None:
        scalars = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name in self._call("log_metrics", step, scalars):
            self._state[name]["step"] = step
        self._save()

    def log_image(self, tag: str, array_hwc: Any, step: int) -> None:
        self._call("log_image", tag, array_hwc, step, newer_only=False)

    def close(self) -> None:
        for name, tracker in list(self._live.items()):
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("tracker %s: closing failed: %s", name, _one_line(exc))
        self._live.clear()

    def _call(self, method: str, *args: Any, newer_only: bool = True) -> list[str]:
        done = []
        for name, tracker in list(self._live.items()):
            replayed = newer_only and args[0] <= self._state[name]["step"]  # args[0]: the step
            if replayed and not tracker.rewrites_replayed:
                continue
            try:
                getattr(tracker, method)(*args)
                done.append(name)
            except Exception as exc:  # noqa: BLE001
                log.warning("tracker %s off for the rest of this run: %s", name, _one_line(exc))
                del self._live[name]
        return done

    def _save(self) -> None:
        self._path.write_text(json.dumps(self._state) + "\n")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
