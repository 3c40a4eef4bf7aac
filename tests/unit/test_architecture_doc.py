"""docs/ARCHITECTURE.md's layout names every module of the core, so that it describes the code
as it is: a module added, moved or removed without its line fails here."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout() -> str:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start = doc.index("mim/ ")
    return doc[start:doc.index("\nmodalities/ ", start)]


def _named(path: Path) -> str:
    """How the layout names a module: its file name, or its folder for a package's init."""
    return path.parent.name + "/" if path.name == "__init__.py" else path.name


def test_the_layout_names_every_module_of_the_core():
    layout = _layout()
    missing = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "mim").rglob("*.py")
                     if "__pycache__" not in p.parts and _named(p) not in layout)
    assert not missing, f"modules the layout of docs/ARCHITECTURE.md does not name: {missing}"


def test_every_module_the_layout_names_exists():
    modules = list((ROOT / "mim").rglob("*.py"))
    names = {_named(p) for p in modules} | {p.name for p in modules} | {"mim/"}
    listed = {word.rstrip(",") for line in _layout().splitlines() for word in line.split()
              if word.rstrip(",").endswith((".py", "/")) and (word[0].isalpha() or word[0] == "_")}
    assert not listed - names, sorted(listed - names)
