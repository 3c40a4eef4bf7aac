"""Helpers for datasets made of files: a recursive scan and optional labels.

Modality-agnostic: a modality says which names it accepts; labels come from nothing, from the
first-level folder names, or from a CSV of ``relative/path,label`` rows. Splitting labelled
items for evaluation is ``mim/data/labelled.py``.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Callable

from mim.data.dataset import UnreadableSample

# suffixes of a compression wrapped around another format: they keep the suffix before them
COMPRESSIONS = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".z"})


def file_suffix(name: str) -> str:
    """A file's format suffix, lower case: the last one (``photo.v2.jpg`` -> ``.jpg``), or the
    last two where the last is a compression (``scan.nii.gz`` -> ``.nii.gz``); "" for none."""
    stem, dot, last = name.rpartition("/")[2].lstrip(".").rpartition(".")
    if not dot:
        return ""
    last = f".{last.lower()}"
    if last in COMPRESSIONS and "." in stem:
        return f".{stem.rpartition('.')[2].lower()}{last}"
    return last


def find_files(root: Path, accept: Callable[[str], bool], what: str) -> list[Path]:
    """Accepted files under ``root`` (recursive, sorted, links followed, hidden names skipped).

    A folder reached a second time through a link (a loop, or two links to one folder) is read
    once, at its first path, and so is a file (a link to a file already listed); the links
    skipped are logged. Raises FileNotFoundError naming ``data.root`` when the folder is missing
    or holds none.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    files: list[Path] = []
    seen: set[str] = set()  # real paths of the folders read (one realpath per folder, not file)
    skipped = 0
    listed: set[str] = set()  # real paths of the files listed
    linked = 0
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []  # os.walk descends only into what is left here
            skipped += 1
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(n for n in names if not n.startswith(".") and accept(n)):
            path = Path(folder) / name
            real_file = os.path.realpath(path)
            if real_file in listed:
                linked += 1
                continue
            listed.add(real_file)
            files.append(path)
    if skipped:
        logging.getLogger("mim.data").warning(
            "data.root: %d link%s to a folder already read under %s (a loop or a second link) "
            "skipped; each real folder is read once", skipped, "" if skipped == 1 else "s", root)
    if linked:
        logging.getLogger("mim.data").warning(
            "data.root: %d link%s to a file already listed under %s skipped; each real file is "
            "read once", linked, "" if linked == 1 else "s", root)
    if not files:
        raise FileNotFoundError(f"data.root: no {what} under {root}")
    return files


def file_labels(files: list[Path], root: Path, how: str) -> tuple[list[int], list[str]]:
    """``how``: none | folders | a CSV path -> (label per file, -1 if none; class names)."""
    if how == "none":
        return [-1] * len(files), []
    if how == "folders":
        names = [f.parent.relative_to(root).parts[0] if f.parent != root else "" for f in files]
        return label_ids(names)
    table = Path(how).expanduser()
    if not table.is_file():
        raise FileNotFoundError(f"data.labels: '{how}' is not none, folders or a CSV file")
    with open(table, newline="") as f:
        rows = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}
    keys = [str(p.relative_to(root)) for p in files]
    return label_ids([rows.get(k) for k in keys], sorted(set(rows.values())))


def label_ids(names: list[str | None], classes: list[str] | None = None
              ) -> tuple[list[int], list[str]]:
    """Class names (None: unlabelled) -> (an id per name, -1 for None; the classes): the ids
    index ``classes``, by default the names sorted (a folder's, a CSV's, a shard's labels)."""
    classes = sorted({n for n in names if n is not None}) if classes is None else classes
    ids = {name: number for number, name in enumerate(classes)}
    return [-1 if n is None else ids[n] for n in names], list(classes)


def stamp(path: str) -> tuple | None:
    """A local path's state: a file's (size, mtime), a folder's entries' (name, size, mtime);
    None for what is not a local path. The key under which what is read of a folder once
    (validation, then the plan, in one process) is kept: a file written, replaced or removed at
    its top level reads it again."""
    try:
        if not os.path.isdir(path):
            info = os.stat(path)
            return (info.st_size, info.st_mtime_ns)
        with os.scandir(path) as entries:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                                for e in entries))
    except (OSError, ValueError):
        return None


MISSING, EMPTY = "missing", "empty"  # the kinds of UnreadableSample that check_file raises


def check_file(path: Path, not_a_file: str) -> None:
    """UnreadableSample unless ``path`` is a regular file with bytes in it (kind ``missing``,
    ``empty``, or ``not_a_file``, the modality's kind for what it cannot open)."""
    if not path.exists():
        raise UnreadableSample("file not found", MISSING)
    if not path.is_file():
        raise UnreadableSample("not a regular file (a directory?)", not_a_file)
    if path.stat().st_size == 0:
        raise UnreadableSample("empty file (0 bytes)", EMPTY)
