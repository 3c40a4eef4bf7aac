"""Checkpoints that a crash or a kill can never corrupt.

A checkpoint is a directory ``step_XXXXXXXX`` written in full under a temporary name in the same
folder, synced to disk, then published with one atomic ``rename``; ``last`` is a symlink
replaced atomically after that. A reader therefore only ever sees complete checkpoints, and a
kill at any point leaves the previous one intact. The backend decides what goes inside (one
file for torch, DeepSpeed's shards for ZeRO).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mim import faults
from mim.config.errors import ConfigError

_NAME = re.compile(r"^step_(\d{8,})$")
LAST = "last"
STATE_FILE = "state.pt"  # the torch step's checkpoint file in a step folder


class CheckpointError(RuntimeError):
    """Saving failed; the previous checkpoint is untouched."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file under ``root`` flushed to disk (a backend's own checkpoint files, before mim
    publishes the checkpoint with a rename)."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_dir(Path(folder) / name)  # os.fsync of a read-only descriptor: file or folder


@contextlib.contextmanager
def _child_signals_held() -> Iterator[None]:
    """Run the Python SIGCHLD handler after the block instead of inside it: torch's DataLoader
    raises from that handler when a worker dies, wherever the main thread is, and an exception
    thrown through ``torch.save``'s writer tears the file and hides the worker's message."""
    previous = signal.getsignal(signal.SIGCHLD)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[Any] = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)
        if pending:
            previous(signal.SIGCHLD, pending[-1])


class Checkpoints:
    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = max(1, keep_last)

    def complete(self) -> list[Path]:
        """Published checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir()
                 if (m := _NAME.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        link = self.root / LAST
        if link.is_symlink() and link.resolve().is_dir():
            return link.resolve()
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, backend: Any, client_state: dict[str, Any]) -> Path:
        """Write checkpoint ``step`` through ``backend.save`` (collective: every rank calls);
        a loader worker that dies meanwhile is reported once the checkpoint is published."""
        with _child_signals_held():
            return self._save(step, backend, client_state)

    def _save(self, step: int, backend: Any, client_state: dict[str, Any]) -> Path:
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp-{final.name}"
        try:
            if backend.is_main:
                self.root.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                faults.kill("ckpt.tmp_created")
            backend.barrier()
            backend.save(tmp, client_state)
            faults.kill("ckpt.written")
            backend.barrier()
            if backend.is_main:
                self._publish(tmp, final)
        except OSError as exc:
            if backend.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            raise CheckpointError(
                f"could not write checkpoint {final} ({exc.strerror or exc}); the previous "
                f"checkpoint {previous or '(none)'} is intact; free space or fix permissions "
                f"of {self.root}, then run the same command to resume"
            ) from exc
        backend.barrier()
        return final

    def _publish(self, tmp: Path, final: Path) -> None:
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again: move the old one aside first
            stale = final.with_name(f".stale-{final.name}")
            shutil.rmtree(stale, ignore_errors=True)
            final.rename(stale)
            shutil.rmtree(stale)
        tmp.rename(final)
        faults.kill("ckpt.renamed")
        link_tmp = self.root / f".{LAST}.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(final.name)
        os.replace(link_tmp, self.root / LAST)
        faults.kill("ckpt.linked")
        _fsync_dir(self.root)
        for old in self.complete()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


# how a file torch.save wrote begins: a zip archive, or the legacy format's pickle
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")
# sentences of torch's refusal that advise loading the file anyway (weights_only=False, an
# allow-listed global): wrong for a file of unknown origin, never passed on
_ADVICE = ("weights_only", "safe_globals", "trust", "file an issue", "documentation",
           "weights only load failed")


def is_torch_file(path: Path) -> bool:
    """Does ``path`` begin as a file ``torch.save`` writes (zip archive or pickle)?"""
    with open(path, "rb") as f:
        head = f.read(4)
    return any(head.startswith(start) for start in TORCH_FILE_STARTS)


def refusal_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (e.g. ``Unsupported global: GLOBAL
    posix.system``), in its words, without its advice to load the file unsafely."""
    kept = []
    for line in str(exc).splitlines():
        line = line.split("WeightsUnpickler error:")[-1]
        kept += [s for s in re.split(r"(?<=\.)\s+", line.strip())
                 if s and not any(word in s.lower() for word in _ADVICE)]
    return " ".join(kept)[:200] or "an object that is not a tensor"


def load_weights_only(path: Path) -> dict[str, Any]:
    """``torch.load`` that never executes pickled code: tensors and plain containers only
    (``weights_only=True``); anything else -> CheckpointError naming the file."""
    try:
        if is_torch_file(path):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refused to load {path}: it holds pickled objects other than "
                              f"tensors and plain containers, which could run code when "
                              f"unpickled ({refusal_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    raise CheckpointError(f"cannot read checkpoint {path}: not a file torch.save writes "
                          "(neither a zip archive nor a pickle)")


def check_fits(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
               where: Path) -> None:
    """A checkpoint written for another model -> ConfigError listing the mismatched keys."""
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    shapes = sorted(k for k in set(saved) & set(current)
                    if tuple(saved[k].shape) != tuple(current[k].shape))
    if not (missing or unexpected or shapes):
        return

    def listed(names: list[str], what: str, limit: int = 6) -> str:
        more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
        return f"{what}: {', '.join(names[:limit])}{more}"

    parts = [listed(missing, "missing"), listed(unexpected, "unexpected"),
             "shape mismatch: " + ", ".join(
                 f"{k} {tuple(saved[k].shape)} vs {tuple(current[k].shape)}"
                 for k in shapes[:6]) + (f" (+{len(shapes) - 6} more)" if len(shapes) > 6 else "")]
    found = "; ".join(p for p, names in zip(parts, (missing, unexpected, shapes)) if names)
    raise ConfigError(f"run.dir: checkpoint {where} was written for another model ({found}); "
                      "use the model settings it was trained with, or another run.dir, or "
                      "run.resume=never")
