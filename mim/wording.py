"""Small pieces of the wording of mim's messages, shared by every command (a leaf module)."""
from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``3 ranks``, ``1 rank``: a count in a message."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def first_names(names: list[str], shown: int = 3) -> str:
    """``a, b, c, ...``: the first few of a list of names, for a one-line message."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
