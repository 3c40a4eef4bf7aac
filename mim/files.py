"""Helpers for datasets made of files: a recursive scan and optional labels.

Modality-agnostic: a modality says which names it accepts; labels come from nothing, from the
first-level folder names, or from a CSV of ``relative/path,label`` rows; a labelled list can be
split into training and held-out items per class.
"""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Callable


def find_files(root: Path, accept: Callable[[str], bool], what: str) -> list[Path]:
    """Accepted files under ``root`` (recursive, sorted, links followed, hidden names skipped).

    Raises FileNotFoundError naming ``data.root`` when the folder is missing or holds none.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: {root} is not a directory")
    files = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        files += [Path(folder) / n for n in sorted(names) if not n.startswith(".") and accept(n)]
    if not files:
        raise FileNotFoundError(f"data.root: no {what} under {root}")
    return files


def file_labels(files: list[Path], root: Path, how: str) -> tuple[list[int], list[str]]:
    """``how``: none | folders | a CSV path -> (label per file, -1 if none; class names)."""
    if how == "none":
        return [-1] * len(files), []
    if how == "folders":
        names = [f.parent.relative_to(root).parts[0] if f.parent != root else "" for f in files]
        classes = sorted(set(names))
        return [classes.index(n) for n in names], classes
    table = Path(how).expanduser()
    if not table.is_file():
        raise FileNotFoundError(f"data.labels: '{how}' is not none, folders or a CSV file")
    with open(table, newline="") as f:
        rows = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}
    classes = sorted(set(rows.values()))
    keys = [str(p.relative_to(root)) for p in files]
    return [classes.index(rows[k]) if k in rows else -1 for k in keys], classes


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, held out): ``fraction`` of every class held out (at least one where a
    class has two or more items), drawn with ``seed``; both lists sorted."""
    rng = random.Random(seed)
    train, held = [], []
    for label in sorted(set(labels)):
        members = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(members)
        count = round(len(members) * fraction)
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        held += members[:count]
        train += members[count:]
    return sorted(train), sorted(held)


def align_labels(labels: list[int], names: list[str], classes: list[str],
                 key: str) -> list[int]:
    """Labels indexing ``names`` (a held-out set's classes) -> indices into ``classes`` (the
    training set's), -1 kept; a class the training set lacks is an error naming ``key``."""
    unknown = sorted({names[i] for i in labels if i >= 0} - set(classes))
    if unknown:
        raise FileNotFoundError(f"{key}: classes {unknown} are not among the training ones "
                                f"({', '.join(classes)})")
    return [classes.index(names[i]) if i >= 0 else -1 for i in labels]


def labelled_files(root: Path, how: str, classes: list[str] | None, key: str,
                   scan: Callable[[Path], list[Path]]) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of the labelled files under ``root`` (``scan`` finds a
    modality's files; ``how`` as ``file_labels``); with ``classes`` (a validation folder) its
    names are mapped onto the training classes. Unlabelled files are left out."""
    if not root.is_dir():
        raise FileNotFoundError(f"{key}: {root} is not a directory")
    files = scan(root)
    labels, names = file_labels(files, root, how)
    if classes is not None:
        labels, names = align_labels(labels, names, classes, key), classes
    keep = [i for i, label in enumerate(labels) if label >= 0]
    return [files[i] for i in keep], [labels[i] for i in keep], names


def check_eval_labels(labels: str, val_fraction: float) -> None:
    """The checks every modality's evaluation data config shares (ValueError naming the key)."""
    if labels == "none":
        raise ValueError("data.labels: evaluation needs labels: folders or a CSV path")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: must be in (0, 1), got {val_fraction}")
