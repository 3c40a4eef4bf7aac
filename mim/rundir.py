"""What mim may write where: a run directory is mim's own, and nothing else is overwritten.

A run directory is recognised by the marker file ``mim-run.json`` that mim writes when it
creates the run (before anything else), or, for runs written before the marker existed, by a
``checkpoints/`` folder holding a ``step_*`` checkpoint. ``mim train`` writes only into an empty
(or missing) folder or such a run. ``mim convert`` writes an export into a temporary sibling,
then renames it into place: onto an empty (or missing) output, never inside a run directory,
and with ``overwrite=true`` onto an export mim wrote only. What mim exported is listed in the
marker ``mim-export.json`` (each file by name and size): inside a folder export, or in the
folder of a file export; a file that no marker lists at its size is not mim's, and nothing
that is not mim's is replaced. This module imports nothing heavy: the CLI checks before any
compute.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mim.config.errors import ConfigError
from mim.config.migrate import current

log = logging.getLogger("mim")
MARKER = "mim-run.json"
# in a folder mim exports into: the files it wrote there, by name, with their sizes
EXPORT_MARKER = "mim-export.json"
_STEP = re.compile(r"^step_\d{8,}$")


# what a run writes into its directory besides its marker: ``run.resume=never`` sets them
# aside (``set_aside``); the launcher's own folders (``slurm/``: the running job's logs) stay
RUN_ENTRIES = ("checkpoints", "metrics.jsonl", "config.yaml", "config_history.jsonl",
               "derived.json", "train.log", "trackers.json", "tb", "pictures", "mlruns",
               "mlflow.db", "mlartifacts", "wandb", "eval")
PREVIOUS = "previous"  # where set_aside moves an earlier run: previous/<time>/


def config_hash(spec: Any) -> str:
    """Identifies a run (``spec``: a ``RunSpec``): the same command (same config) maps to the
    same run directory."""
    return tree_hash(OmegaConf.to_container(spec.raw, resolve=True))


def tree_hash(tree: dict[str, Any]) -> str:
    """``config_hash`` of a resolved config tree."""
    tree = json.loads(json.dumps(tree))
    tree.pop("run", None)
    tree.pop("launcher", None)
    tree.pop("tracker", None)  # where a run reports, not what it computes
    if tree.get("model", {}).get("init") is None:  # added later: runs without it keep their dir
        tree.get("model", {}).pop("init", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:8]


def default_run_dir(spec: Any) -> Path:
    """``<run.root>/<modality>/<model>/<config hash>``, as given (relative to where it runs);
    where it does not exist, the folder an earlier mim made for the same config (``earlier``)."""
    digest = config_hash(spec)
    own = Path(spec.run.root) / spec.modality.name / spec.model.name / digest
    return own if own.exists() else earlier(own.parent, digest) or own


_SAID: set[Path] = set()  # the earlier folders already named in the log


def earlier(folder: Path, digest: str) -> Path | None:
    """The run in ``folder`` whose ``config.yaml``, read with today's keys
    (``mim/config/migrate.py``), hashes to ``digest``: the same config, written by a mim whose
    keys hashed otherwise (a rename changes the hash, not the run)."""
    for path in sorted(folder.glob("*/config.yaml")) if folder.is_dir() else ():
        try:
            tree = current(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        except Exception:  # noqa: BLE001 (unreadable: not this config's run)
            continue
        if isinstance(tree, dict) and tree_hash(tree) == digest:
            if path.parent not in _SAID:  # run_dir is asked before launching and in the run
                _SAID.add(path.parent)
                log.info("run folder: %s, made for this config by an earlier mim", path.parent)
            return path.parent
    return None


def run_dir(spec: Any) -> Path:
    """The run directory: ``run.dir``, else the default one, resolved here."""
    if spec.run.dir:
        return Path(spec.run.dir).expanduser().resolve()
    return default_run_dir(spec).resolve()
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
    return _few(sorted(p.name for p in path.iterdir()))


def _few(names: list[str]) -> str:
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


def _marker_files(folder: Path) -> dict[str, int]:
    """name -> size in bytes of each file that mim's export marker in ``folder`` lists ({}
    without one, or with one mim did not write)."""
    try:
        data = json.loads((folder / EXPORT_MARKER).read_text())
        listed = data["files"] if data.get("written_by") == "mim" else {}
        return {str(name): int(size) for name, size in listed.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def mim_wrote(path: Path) -> bool:
    """True for a plain file that the export marker beside it lists, at the size mim wrote:
    a file added, or changed since, is not mim's."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    return _marker_files(path.parent).get(path.name) == path.stat().st_size


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _not_written_by_mim(output: Path) -> list[str]:
    """The names at ``output`` that mim's marker does not account for (a folder: its
    entries, the marker aside; a file: itself)."""
    if not _is_folder(output):
        return [] if mim_wrote(output) else [output.name]
    ours = bool(_marker_files(output))  # the marker itself, where it is mim's
    return sorted(p.name for p in output.iterdir()
                  if not (ours if p.name == EXPORT_MARKER else mim_wrote(p)))


def check_export_target(output: Path, overwrite: bool) -> None:
    """Refuse an export into a run directory, onto something that exists without
    ``overwrite=true`` (an empty folder counts as free), and, with it, onto anything but an
    export mim wrote: a folder whose every file its marker lists, or a file a marker lists."""
    output = Path(output).absolute()
    run = _run_containing(output)
    if run is not None:
        raise ConfigError(f"output: {output} is inside the mim run {run}; an export never goes "
                          "into a run directory: choose an output outside it")
    if output.name == EXPORT_MARKER:
        raise ConfigError(f"output: {EXPORT_MARKER} is the name of mim's export marker: choose "
                          "another name")
    folder = _is_folder(output)
    if not (output.exists() or output.is_symlink()) or (folder and not any(output.iterdir())):
        return
    if not overwrite:
        what = f"a folder holding {_listing(output)}" if folder else "an existing file"
        raise ConfigError(f"output: {output} is {what}; mim does not overwrite what it did not "
                          "write: choose an empty or new output, or set overwrite=true to "
                          "replace an export mim wrote")
    foreign = _not_written_by_mim(output)
    if foreign:
        what = (f"holds {_few(foreign)}, which no {EXPORT_MARKER} of mim's lists" if folder else
                f"is a file no {EXPORT_MARKER} of mim's beside it lists")
        raise ConfigError(f"output: {output} {what} (mim did not write it, or it changed since); "
                          "overwrite=true replaces only an export mim wrote: choose an empty or "
                          "new output")


def staging_path(output: Path) -> Path:
    """A fresh sibling folder of ``output`` (same folder: the renames stay atomic) that an
    export is written into, under ``output``'s own name (``publish`` moves it out)."""
    output = Path(output).absolute()
    return output.with_name(f".{output.name}-tmp{os.getpid()}")


def record_export(folder: Path, names: list[str], fmt: str | None = None) -> None:
    """List ``names`` (files in ``folder``, at their sizes now) in ``folder``'s export marker,
    the entries already there kept: what a later ``overwrite=true`` may replace. ``fmt``: the
    format of an export that is the whole folder."""
    folder = Path(folder)
    files = _marker_files(folder)
    if (folder / EXPORT_MARKER).exists() and not files:  # a file of that name, not mim's
        log.warning("%s: not mim's, kept; %s not listed as mim's", folder / EXPORT_MARKER,
                    ", ".join(names))
        return
    files.update({name: (folder / name).stat().st_size for name in names})
    marker = {"written_by": "mim", **({"format": fmt} if fmt else {}),
              "files": dict(sorted(files.items()))}
    tmp = folder / f".{EXPORT_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, folder / EXPORT_MARKER)


def _replace(new: Path, output: Path) -> None:
    """``new`` renamed to ``output``; an old ``output`` is renamed aside first and deleted only
    after the new one is in place, so a failure leaves the old or the new one complete."""
    if _is_folder(output) and not any(output.iterdir()):
        output.rmdir()
    if not (output.exists() or output.is_symlink()):
        os.rename(new, output)
        return
    old = output.with_name(f".{output.name}-old{os.getpid()}")
    os.rename(output, old)
    os.rename(new, output)
    discard(old)


def publish(staged: Path, output: Path, fmt: str, overwrite: bool) -> None:
    """Move the export written at ``staged / output.name`` (format ``fmt``) to ``output``
    (checked again: new, empty, or with ``overwrite`` an export mim wrote) and list what it
    holds in an export marker: inside a folder export; for a file export, in its folder, with
    what the writer put beside the file (its model card), moved there too unless a file of
    that name there is not mim's (kept, and said)."""
    output = Path(output).absolute()
    export = staged / output.name
    if _is_folder(export):
        record_export(export, sorted(p.name for p in export.iterdir()), fmt)
    check_export_target(output, overwrite)
    _replace(export, output)
    if _is_folder(output):
        return
    moved = [output.name]
    for extra in sorted(staged.iterdir()):
        beside = output.with_name(extra.name)
        if (beside.exists() or beside.is_symlink()) and not mim_wrote(beside):
            log.warning("%s exists and mim did not write it (no %s lists it): kept; the "
                        "export's %s is not written", beside, EXPORT_MARKER, extra.name)
            continue
        os.replace(extra, beside)
        moved.append(extra.name)
    record_export(output.parent, moved)


def discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
