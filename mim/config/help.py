"""Keys of a config schema as ``--help`` shows them: name, type, default and meaning.

A key's meaning lives in one place, the comment on its field in the schema dataclass (trailing
on the field's line, or else the comment lines right above it), so the help text cannot drift
from the code; ``meanings`` reads it from the source with ``ast`` and ``tokenize``.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

WIDTH = 100


@dataclass(frozen=True)
class Key:
    name: str  # dotted, e.g. train.batch_size
    type: str
    default: str
    meaning: str  # "" when the field has no comment


@functools.lru_cache(maxsize=None)
def _own_comments(klass: type) -> dict[str, str]:
    """The comment of each field defined in ``klass``'s own body."""
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # installed without its .py files: no meanings to show
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 1-based line -> comment text
    full_line: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            comments[row] = token.string.lstrip("#").strip()
            if lines[row - 1].lstrip().startswith("#"):
                full_line.add(row)
    body = ast.parse(source).body[0].body
    found = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = [comments[r] for r in range(node.lineno, node.end_lineno + 1)
                    if r in comments and r not in full_line]
        above, row = [], node.lineno - 1
        while row in full_line:
            above.insert(0, comments[row])
            row -= 1
        found[node.target.id] = " ".join(trailing or above)
    return found


def meanings(cls: type) -> dict[str, str]:
    """field name -> its comment, over the dataclass's bases too (a subclass's own wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and "__dataclass_fields__" in vars(klass):
            out.update({k: v for k, v in _own_comments(klass).items() if v or k not in out})
    return out


def _type(text: Any) -> str:
    text = getattr(text, "__name__", None) or str(text)
    text = re.sub(r"Optional\[(.*)\]$", r"\1 | None", text)
    return text.replace("typing.", "").replace("Dict[", "dict[").replace("List[", "list[")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def show(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    return str(value)


def keys(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> list[Key]:
    """Every key of the schema ``cls`` under ``prefix``; nested dataclasses are expanded."""
    notes = meanings(cls)
    out = []
    for field in dataclasses.fields(cls):
        if field.name in skip or field.name.startswith("_"):
            continue
        value = _default(field)
        if dataclasses.is_dataclass(value):
            out.extend(keys(type(value), f"{prefix}{field.name}."))
            continue
        out.append(Key(f"{prefix}{field.name}", _type(field.type), show(value),
                       notes.get(field.name, "")))
    return out


def table(rows: list[Key], indent: str = "  ") -> str:
    """Aligned columns key / type / default, then the meaning (wrapped under itself)."""
    if not rows:
        return f"{indent}(no keys)"
    widths = [max(len(getattr(r, a)) for r in rows) for a in ("name", "type")]
    dwidth = min(max(len(r.default) for r in rows), 16)
    lines = []
    for r in rows:
        head = f"{indent}{r.name:<{widths[0]}}  {r.type:<{widths[1]}}  {r.default:<{dwidth}}  "
        meaning = r.meaning or "(undocumented)"
        if WIDTH - len(head) < 40:  # a wide section: the meaning goes under the key instead
            lines.append(head.rstrip())
            head = indent + "    "
            lines.extend(textwrap.wrap(meaning, WIDTH, initial_indent=head,
                                       subsequent_indent=head))
            continue
        text = textwrap.wrap(meaning, WIDTH - len(head)) or [""]
        lines.append(head + text[0])
        lines.extend(" " * len(head) + more for more in text[1:])
    return "\n".join(lines)


def options(title: str, names: list[str], default: str | None = None) -> str:
    """One line listing a group's options, the default marked with ``*``."""
    shown = [f"{n}*" if n == default else n for n in names]
    return textwrap.fill(f"{title}: " + ", ".join(shown), WIDTH, subsequent_indent="    ")
