"""List files of timed items: one a line, ``path [label] [start_sec end_sec]``.

The grammar video and audio share: paths relative to the list file's folder (quote a path with
spaces, ``#`` starts a comment), labels integers or class names (names are numbered sorted),
a window in seconds optional. Every problem is a ``ValueError`` or ``FileNotFoundError`` naming
the key and the line.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class ListedItem:
    path: Path
    label: int = -1  # -1: none given
    start: Optional[float] = None  # seconds; None: the whole file
    end: Optional[float] = None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _row(line: str, where: str, folder: Path) -> tuple | None:
    try:
        parts = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not parts:
        return None
    path, rest, start, end = parts[0], parts[1:], None, None
    if len(rest) >= 2 and _number(rest[-1]) is not None and _number(rest[-2]) is not None:
        start, end = _number(rest[-2]), _number(rest[-1])
        rest = rest[:-2]
        if not 0 <= start < end:
            raise ValueError(f"{where}: need 0 <= start_sec < end_sec, got {start:g} {end:g}")
    if len(rest) > 1:
        raise ValueError(f"{where}: expected 'path [label] [start_sec end_sec]', got "
                         f"{len(parts)} fields (quote paths with spaces)")
    resolved = Path(path).expanduser()
    return (resolved if resolved.is_absolute() else folder / resolved,
            rest[0] if rest else None, start, end)


def read_list(list_file: Path, key: str = "data.list_file", what: str = "items",
              classes: list[str] | None = None) -> tuple[list[ListedItem], list[str]]:
    """Parse ``list_file`` -> (items, class names; [] where the labels are numbers); with
    ``classes`` (a held-out list beside a training one) named labels are mapped onto those
    classes, -1 for a name not among them."""
    if not list_file.is_file():
        raise FileNotFoundError(f"{key}: {list_file} is not a file")
    rows = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        row = _row(line, f"{key}: {list_file} line {number}", list_file.parent)
        if row is not None:
            rows.append(row)
    if not rows:
        raise FileNotFoundError(f"{key}: {list_file} lists no {what}")
    names = sorted({label for _, label, _, _ in rows if label is not None})
    numeric = all(name.lstrip("-").isdigit() for name in names)
    if names and not numeric and classes is not None:
        names = classes
    items = [ListedItem(path, -1 if label is None else int(label) if numeric
                        else names.index(label) if label in names else -1, start, end)
             for path, label, start, end in rows]
    return items, [] if numeric else names
