"""A fresh virtual environment with only some requirements in it, built in about a second.

``python -m venv --without-pip`` makes the environment; its site-packages gets symbolic links
to the distributions the requirements need (followed through their own requirements, markers
evaluated here), taken from the environment running the tests, where pip installed them; the
wheel under test is installed by pip. Installing torch and the rest afresh would cost a minute
and 1.3 GB per test session. A package outside the requirements is simply not there, as after
a real install of them.
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from collections import defaultdict
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``requirements`` need here, by canonical name."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(req, {""}) for req in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue  # extras of an already found distribution: the suite needs none of them
        dist = found[name] = metadata.distribution(req.name)
        todo += [(Requirement(line), {"", *req.extras}) for line in dist.requires or []]
    return found


def _files(dist: metadata.Distribution) -> list[Path]:
    """A distribution's files under site-packages, relative to it (scripts left out)."""
    return [Path(f) for f in dist.files or [] if not str(f).startswith("..")]


def base_environment(wheel: Path, requirements: list[Requirement], where: Path) -> Path:
    """A venv at ``where`` holding ``wheel`` and what ``requirements`` need; returns ``where``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(where), "platbase": str(where)})["purelib"])
    here = Path(sysconfig.get_paths()["purelib"])
    needed = closure(requirements)
    owners: dict[str, set[str]] = defaultdict(set)  # a top-level name -> the dists with files there
    for dist in metadata.distributions(path=[str(here)]):
        name = canonicalize_name(dist.metadata["Name"])
        for file in _files(dist):
            owners[file.parts[0]].add(name)
    links = set()  # a folder only needed distributions use is linked whole, else file by file
    for dist in needed.values():
        links.update(f.parts[0] if owners[f.parts[0]] <= needed.keys() else f for f in _files(dist))
    for relative in links:
        link = site / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(here / relative)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True)
    return where
