"""Labelled items for ``mim eval``, the part every modality shares: training and held-out
splits per class (seeded), class lists of a held-out set mapped onto the training ones, and the
checks of the split keys.

A modality reads its items (files, list lines, a demo set) and builds its own datasets and views
from the two splits; the items themselves can be anything (paths, list entries).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Optional, TypeVar

from mim.data.files import file_labels

T = TypeVar("T")


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
    try:
        files = scan(root)
    except FileNotFoundError as exc:  # ``scan`` names data.root; this folder may be another key
        raise FileNotFoundError(str(exc).replace("data.root", key, 1)) from None
    labels, names = file_labels(files, root, how)
    if classes is not None:
        labels, names = align_labels(labels, names, classes, key), classes
    keep = [i for i, label in enumerate(labels) if label >= 0]
    return [files[i] for i in keep], [labels[i] for i in keep], names


def check_eval_labels(labels: str, val_fraction: float) -> None:
    """The checks every modality's evaluation data config shares (ValueError naming the key)."""
    if labels == "none":
        raise ValueError("data.labels: evaluation needs labels: folders or a CSV path")
    check_val_fraction(val_fraction)


def check_val_fraction(val_fraction: float) -> None:
    """ValueError naming ``data.val_fraction`` unless it is in (0, 1)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: must be in (0, 1), got {val_fraction}")


def split_items(items: list[T], labels: list[int], held_out: Optional[list[T]], fraction: float,
                seed: int) -> tuple[list[T], list[T]]:
    """(training items, held-out items): all of ``items`` and ``held_out`` where a held-out set
    was given (``data.val_root`` and the like), else ``fraction`` of every class of ``items``
    (``labels``, one per item) held out, drawn with ``seed``."""
    if held_out is not None:
        return list(items), list(held_out)
    train, held = stratified_split(labels, fraction, seed)
    return [items[i] for i in train], [items[i] for i in held]


def split_files(files: list[Path], labels: list[int], classes: list[str],
                val_root: Optional[str], how: str, fraction: float, seed: int,
                scan: Callable[[Path], list[Path]]
                ) -> tuple[list[Path], list[int], list[Path], list[int]]:
    """(train files, train labels, held-out files, held-out labels) of labelled files: the
    held-out set is the labelled files under ``val_root`` (``how`` as ``file_labels``, classes
    mapped onto ``classes``; FileNotFoundError if it has none), or a seeded ``fraction`` of
    every class (``split_items``)."""
    held_out = None
    if val_root:
        root = Path(val_root).expanduser()
        val, val_labels, _ = labelled_files(root, how, classes, "data.val_root", scan)
        if not val:
            raise FileNotFoundError(f"data.val_root: no labelled files under {root}")
        held_out = list(zip(val, val_labels))
    train, held = split_items(list(zip(files, labels)), labels, held_out, fraction, seed)
    return ([f for f, _ in train], [label for _, label in train], [f for f, _ in held],
            [label for _, label in held])
