"""What mim may write where: a run directory is mim's own, and nothing else is overwritten.

A run directory is recognised by the marker file ``mim-run.json`` that mim writes when it
creates the run (before anything else), or, for runs written before the marker existed, by a
``checkpoints/`` folder holding a ``step_*`` checkpoint. ``mim train`` writes only into an empty
(or missing) folder or such a run; ``mim convert`` writes only into an empty (or missing)
output, or with ``overwrite=true`` through a temporary sibling and a rename, and never inside a
run directory. This module imports nothing heavy: the CLI checks before any compute.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from mim.config.errors import ConfigError

MARKER = "mim-run.json"
_STEP = re.compile(r"^step_\d{8,}$")


# what a run writes into its directory besides its marker: ``run.resume=never`` sets them
# aside (``set_aside``); the launcher's own folders (``slurm/``: the running job's logs) stay
RUN_ENTRIES = ("checkpoints", "metrics.jsonl", "config.yaml", "config_history.jsonl",
               "derived.json", "train.log", "trackers.json", "tb", "pictures", "mlruns",
               "mlflow.db", "mlartifacts", "wandb", "eval")
PREVIOUS = "previous"  # where set_aside moves an earlier run: previous/<time>/


def is_mim_run(path: Path) -> bool:
    """True for a folder mim made a run of (its marker, or a published checkpoint: a
    ``step_*`` folder with files in it, as mim publishes only complete ones)."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    checkpoints = path / "checkpoints"
    return checkpoints.is_dir() and any(_STEP.match(p.name) and p.is_dir() and any(p.iterdir())
                                        for p in checkpoints.iterdir())


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def check_run_dir(path: Path) -> None:
    """Refuse a ``run.dir`` that is neither missing, empty nor a mim run (reads only)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"run.dir: {path} is a file, not a folder; choose another run.dir")
    if is_mim_run(path) or not any(path.iterdir()):
        return
    raise ConfigError(f"run.dir: {path} is neither empty nor a mim run (it holds "
                      f"{_listing(path)}; no {MARKER}, no checkpoints/step_*); mim writes only "
                      "into an empty folder or a run it made: choose another run.dir")


def claim_run_dir(path: Path) -> None:
    """Create the run directory and its marker (main process only; after ``check_run_dir``)."""
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.exists():  # written in place: another rank's check must never see a temp file
        marker.write_text(json.dumps({"written_by": "mim",
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


def set_aside(path: Path) -> Path | None:
    """Move an earlier run's entries (``RUN_ENTRIES``) out of the run directory ``path`` into
    ``previous/<time>/`` before a new run starts there (``run.resume=never``): its checkpoints,
    metrics, tracker ids and history then neither mix with the new run's nor stand in for
    them, and stay readable where they are moved to. Returns that folder, or None when there
    was nothing to move. Main process only, after ``check_run_dir``."""
    entries = [path / name for name in RUN_ENTRIES if (path / name).exists()]
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path / PREVIOUS / stamp
    n = 1
    while target.exists():  # two starts in one second
        n += 1
        target = path / PREVIOUS / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for entry in entries:  # renames within one folder: nothing is copied or lost
        os.rename(entry, target / entry.name)
    return target


def _run_containing(path: Path) -> Path | None:
    for folder in [path, *path.parents]:
        if folder.is_dir() and is_mim_run(folder):
            return folder
    return None


def check_export_target(output: Path, overwrite: bool) -> None:
    """Refuse an export into a run directory, or onto something that exists without
    ``overwrite=true`` (an empty folder counts as free)."""
    output = Path(output).absolute()
    run = _run_containing(output)
    if run is not None:
        raise ConfigError(f"output: {output} is inside the mim run {run}; an export never goes "
                          "into a run directory: choose an output outside it")
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not overwrite:
        what = f"a folder holding {_listing(output)}" if output.is_dir() else "an existing file"
        raise ConfigError(f"output: {output} is {what}; mim does not overwrite what it did not "
                          "write: choose an empty or new output, or set overwrite=true to "
                          "replace it")


def staging_path(output: Path) -> Path:
    """A fresh sibling of ``output`` to write into (same folder: the rename stays atomic; the
    suffix kept, so a writer choosing between a file and a folder by it chooses alike)."""
    output = Path(output).absolute()
    return output.with_name(f".{output.stem}-tmp{os.getpid()}{output.suffix}")


def publish(staged: Path, output: Path) -> None:
    """Move a finished ``staged`` export to ``output``: one rename when ``output`` is new; else
    the old one is renamed aside first and deleted only after the new one is in place, so a
    failure leaves the old or the new export complete, never a mixture."""
    output = Path(output).absolute()
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    if not output.exists():
        os.rename(staged, output)
        return
    old = output.with_name(f".{output.stem}-old{os.getpid()}{output.suffix}")
    os.rename(output, old)
    os.rename(staged, output)
    discard(old)


def discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
