"""mim's cache folder and folders written into it once, whole: the demo sets.

``cache_root()`` is ``$MIM_CACHE_DIR`` (default ``~/.cache/mim``). ``written_once`` writes a
folder into a temporary sibling and publishes it by one atomic rename, so an interrupted write
leaves no folder that could be taken for a finished one, and of two concurrent writers one wins
and the other's copy is removed. ``write_json`` publishes a file the same way (the index of a
shard, the checks of a segmentation set's annotations).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger("mim.data")


def cache_root() -> Path:
    """``$MIM_CACHE_DIR``, or ``~/.cache/mim``."""
    base = os.environ.get("MIM_CACHE_DIR") or os.path.join("~", ".cache", "mim")
    return Path(base).expanduser()


def written_once(folder: Path, write: Callable[[Path], None], done: str) -> Path:
    """``folder``, written by ``write(temporary sibling)`` unless it exists; ``done`` is logged
    (with the folder) when this call published it."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        tmp.rename(folder)  # atomic publish; a concurrent writer may have won
        log.info("%s into %s", done, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as JSON at ``path``, written to a temporary sibling and renamed (processes
    writing the same file each rename their own; the last one wins, none is torn)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temp, "w") as f:
            json.dump(data, f)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
