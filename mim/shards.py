"""WebDataset tar shards as a map-style source: the shard list, an index of members, reads.

Modality-agnostic: a modality's dataset asks for the items (members grouped by key as WebDataset
groups them: ``dir/0001.jpg`` and ``dir/0001.cls`` are item ``dir/0001``) and reads one member's
bytes by offset, so the global sample order, per-rank slicing, per-sample seeds and the exact
resume of ``mim/data.py`` work on shards as on folders.

The index is our own, not webdataset's ``wids``: one JSON per shard of (member, offset, size),
read from the tar headers once by the standard library's ``tarfile``, so mim needs no
webdataset install and reads any fsspec URL the same way. It is cached beside a local shard
(``NAME.tar.idx.json``, written by ``mim data pack``) or under ``$MIM_CACHE_DIR/shard_index``,
and rebuilt when missing, unreadable or made for a shard of another size.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import fsspec

from mim.data import UnreadableSample

log = logging.getLogger("mim.data")
INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 1
INDEX_THREADS = 16  # shards indexed at once (reads of headers or cached indices)


@dataclass(frozen=True)
class Item:
    shard: int  # position in the shard list
    key: str  # the members' common name, up to the first dot of the file name
    members: dict[str, tuple[int, int]]  # extension (e.g. "jpg") -> (offset, size) in bytes


def check_format(format: str, root: str | None, labels: str) -> None:
    """``data.format`` of a modality that reads files (folder) or shards (wds)."""
    if format not in ("folder", "wds"):
        raise ValueError(f"data.format: '{format}' is not one of: folder, wds")
    if format == "wds" and not root:
        raise ValueError("data.root: data.format=wds reads shards; give their folder, list, "
                         "brace pattern or URL")
    if format == "wds" and labels != "none":
        raise ValueError("data.labels: shards carry their labels (KEY.cls); leave "
                         "data.labels=none with data.format=wds")


def check_eval_format(format: str) -> None:
    """``mim eval`` splits labelled files: data.format=wds is for pretraining only."""
    if format != "folder":
        raise ValueError(f"data.format: mim eval reads labelled files (folder); '{format}' is "
                         "for pretraining")


def expand_braces(pattern: str) -> list[str]:
    """``train-{000..127}.tar`` (zero-padded ranges) and ``{a,b}`` lists, as WebDataset's
    ``braceexpand`` does; the first brace group is expanded, then the rest recursively."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    return [out for c in choices for out in expand_braces(head + c + tail)]


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def shard_urls(root: str) -> list[str]:
    """``data.root`` with ``data.format=wds`` -> the shards: a folder (its ``*.tar``, sorted),
    a list file (one shard a line, relative to the list's folder), a brace pattern, or any
    fsspec URL of those. Raises FileNotFoundError naming data.root when none is found."""
    urls = []
    for url in expand_braces(root):
        fs, path = fsspec.core.url_to_fs(os.path.expanduser(url))
        protocol = "" if is_local(url) else url.split("://")[0] + "://"
        if fs.isdir(path):
            urls += sorted(protocol + p for p in fs.glob(path.rstrip("/") + "/*.tar"))
        elif not path.endswith(".tar") and fs.isfile(path):
            base = url.rsplit("/", 1)[0] if "/" in url else "."
            with fs.open(path, "rt") as f:
                lines = [line.strip() for line in f if line.strip()]
            urls += [line if "://" in line or line.startswith("/") else f"{base}/{line}"
                     for line in lines]
        elif fs.exists(path):
            urls.append(url)
        else:
            raise FileNotFoundError(f"data.root: {url} is not a shard, folder or list of shards")
    if not urls:
        raise FileNotFoundError(f"data.root: no .tar shards in {root}")
    return [os.path.expanduser(u) for u in urls]


def _index_places(url: str, size: int) -> tuple[list[str], list[str]]:
    """(where an index may be read, where one may be written): beside the shard (a remote
    one's is read-only: `mim data pack` wrote it before the upload), then the cache."""
    digest = hashlib.blake2b(f"{url}/{size}".encode(), digest_size=10).hexdigest()
    base = os.environ.get("MIM_CACHE_DIR") or os.path.join("~", ".cache", "mim")
    cached = os.path.join(os.path.expanduser(base), "shard_index", digest + INDEX_SUFFIX)
    beside = url.removeprefix("file://") + INDEX_SUFFIX if is_local(url) else None
    return [url + INDEX_SUFFIX, cached], [p for p in (beside, cached) if p]


def scan_members(url: str) -> tuple[list[tuple[str, int, int]], str | None]:
    """The regular files of a tar from its headers: ([(name, offset, size)], None), or the
    members read before a damaged or truncated header and the reason the rest is missing."""
    members: list[tuple[str, int, int]] = []
    with fsspec.open(url, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                for info in tar:
                    if info.isfile():
                        members.append((info.name, info.offset_data, info.size))
        except (tarfile.TarError, EOFError, OSError) as exc:
            return members, f"{type(exc).__name__}: {exc}"
    return members, None


def _write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"  # ranks indexing the same shard: each renames its own
    with open(temp, "w") as f:
        json.dump(data, f)
    os.replace(temp, path)


def shard_index(url: str) -> dict:
    """The index of one shard, ``{"size", "members": [[name, offset, size]], "damage"}``, from
    its cache when it was made for a shard of this size, else built and cached."""
    fs, path = fsspec.core.url_to_fs(url)
    size = fs.size(path)
    reads, writes = _index_places(url, size)
    for place in reads:
        try:
            with fsspec.open(place, "rt") as f:
                index = json.load(f)
            if index.get("version") == INDEX_VERSION and index.get("size") == size:
                return index
            log.info("shard index %s was made for another shard; rebuilt", place)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("shard index %s unreadable (%s); rebuilt", place, exc)
    members, damage = scan_members(url)
    index = {"version": INDEX_VERSION, "size": size, "members": members, "damage": damage}
    for place in writes:  # beside the shard where we may write, else in the cache
        try:
            _write_json(place, index)
            break
        except OSError:
            continue
    return index


def group_items(shard: int, members: list[list]) -> list[Item]:
    """Members grouped by key in the order of the tar (WebDataset's rule: the key ends at the
    first dot of the file name; hidden names and folders' own entries are left out)."""
    items: dict[str, dict[str, tuple[int, int]]] = {}
    for name, offset, size in members:
        folder, _, base = name.rpartition("/")
        if base.startswith(".") or "." not in base:
            continue
        stem, _, ext = base.partition(".")
        items.setdefault(f"{folder}/{stem}" if folder else stem, {})[ext.lower()] = (offset, size)
    return [Item(shard, key, found) for key, found in items.items()]


def index_shards(urls: list[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every item of the shards, in shard then tar order, and the shards (or their tails)
    skipped with the reason: a shard that cannot be read at all, or a damaged tail."""
    def read(url: str) -> dict | OSError:
        try:
            return shard_index(url)
        except OSError as exc:
            return exc

    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(INDEX_THREADS) as pool:  # I/O-bound: remote headers, many shards
        indices = list(pool.map(read, urls))
    for number, (url, index) in enumerate(zip(urls, indices)):
        if isinstance(index, OSError):
            skipped.append((url, f"{type(index).__name__}: {index}"))
            continue
        if index["damage"]:
            skipped.append((url, f"read up to member {len(index['members'])}: "
                                 f"{index['damage']}"))
        items += group_items(number, index["members"])
    for url, reason in skipped:
        log.warning("shard %s: %s; its unreadable part is skipped", url, reason)
    return items, skipped


class ShardReader:
    """Reads members by offset. Each process opens a shard when it first reads from it and
    keeps it open (a loader worker forked with a reader opens its own: handles never cross
    processes); local shards are plain files, others fsspec's."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:  # a spawned worker: the shard list, no handles
        return {"urls": self.urls, "_handles": {}, "_pid": -1}

    def read(self, shard: int, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():  # forked: the parent's handles stay the parent's
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            url = self.urls[shard]
            handle = (open(url.removeprefix("file://"), "rb") if is_local(url)
                      else fsspec.open(url, "rb").open())
            self._handles[shard] = handle
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise UnreadableSample(f"shard truncated: member of {size} bytes at {offset}, "
                                   f"{len(data)} left", "truncated shard")
        return data

    def describe(self, item: Item, ext: str) -> str:
        return f"{self.urls[item.shard]}:{item.key}.{ext}"


# where a member is copied for a reader that needs a file name (RAM-backed where there is one)
SPILL_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass(frozen=True)
class Member:
    """One shard member where a modality's reader takes a file (NIfTI, a video decoder):
    ``local()`` copies it to a temporary file named with its extension, removed after use."""

    reader: ShardReader
    item: Item
    ext: str

    def __str__(self) -> str:
        return self.reader.describe(self.item, self.ext)

    @contextmanager
    def local(self) -> Iterator[Path]:
        data = self.reader.read(self.item.shard, *self.item.members[self.ext])
        with tempfile.NamedTemporaryFile(suffix=f".{self.ext}", dir=SPILL_DIR) as f:
            f.write(data)
            f.flush()
            yield Path(f.name)


def shard_members(root: str, accept: Callable[[str], bool]) -> tuple[list[Member], int]:
    """The first accepted member (``accept(file name)``) of every item of the shards named by
    ``root`` (``shard_urls``), and how many shards were damaged."""
    urls = shard_urls(root)
    items, skipped = index_shards(urls)
    reader = ShardReader(urls)
    found = [(item, next((e for e in item.members if accept(f"x.{e}")), None)) for item in items]
    members = [Member(reader, item, ext) for item, ext in found if ext]
    if not members:
        raise FileNotFoundError(f"data.root: no accepted members in the {len(urls)} shards of "
                                f"{root}")
    return members, len(skipped)
