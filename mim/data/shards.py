"""WebDataset tar shards as a map-style source: the shard list, an index of members, reads.

Modality-agnostic: a modality's dataset asks for the items (members grouped by key as WebDataset
groups them: ``dir/0001.jpg`` and ``dir/0001.cls`` are item ``dir/0001``) and reads one member's
bytes by offset, so the global sample order, per-rank slicing, per-sample seeds and the exact
resume of ``mim/data/dataset.py`` work on shards as on folders.

The index is our own, not webdataset's ``wids``: one JSON per shard of (member, offset, size),
read from the tar headers once by the standard library's ``tarfile``, so mim needs no
webdataset install and reads any fsspec URL the same way. It is read beside the shard
(``NAME.tar.idx.json``, written by ``mim data pack``) or from mim's cache
(``$MIM_CACHE_DIR/shard_index``, keyed by the shard's path, size and mtime), and rebuilt when
missing, unreadable or stale: made for a shard of another size, or whose tar headers are no
longer where it says. A new index goes into the cache; beside the shard only in mim's own pack
(its manifest or marker lists the shard), never into a user's data folder.

A pack's ``manifest.json`` (and its marker ``mim-pack.json``, written first and updated as it
goes) say what the shards should be: a run warns where they disagree, and refuses a folder a
pack left unfinished (a marker or a pack's temporary files, no manifest).
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

from mim.data.cache import cache_root, write_json
from mim.data.dataset import LOAD_ERRORS, UnreadableSample
from mim.data.files import label_ids
from mim.wording import first_names, plural

log = logging.getLogger("mim.data")
INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 2  # 2: the shard's mtime and a digest of some tar headers
INDEX_THREADS = 16  # shards indexed at once (reads of headers or cached indices)
HEADER_SAMPLES = 8  # members whose 512-byte tar header the index's digest covers
MANIFEST = "manifest.json"  # what a pack holds, written last (``mim/data/pack.py``)
MARKER = "mim-pack.json"  # mim's own pack: written first, lists every file the pack writes
LABELS = "shards"  # data.labels reading the shards' KEY.cls / KEY.json


@dataclass(frozen=True)
class Item:
    shard: int  # position in the shard list
    key: str  # the members' common name, up to the first dot of the file name
    members: dict[str, tuple[int, int]]  # extension (e.g. "jpg") -> (offset, size) in bytes


def check_format(format: str, root: str | None, labels: str) -> None:
    """``data.format`` of a modality that reads files (folder) or shards (wds), and the
    ``data.labels`` each reads: shards carry theirs (``data.labels=shards`` reads them)."""
    if format not in ("folder", "wds"):
        raise ValueError(f"data.format: '{format}' is not one of: folder, wds")
    if format == "wds" and not root:
        raise ValueError("data.root: data.format=wds reads shards; give their folder, list, "
                         "brace pattern or URL")
    if format == "wds" and labels not in ("none", LABELS):
        raise ValueError(f"data.labels: '{labels}' names labels of files; shards carry theirs "
                         f"(KEY.cls): data.labels={LABELS} reads them, none reads none")
    if format == "folder" and labels == LABELS:
        raise ValueError(f"data.labels: '{LABELS}' reads the labels packed in shards; it needs "
                         "data.format=wds (files: none, folders or a CSV)")


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
    named = expand_braces(root)
    for url in named:
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
        elif len(named) > 1:
            raise FileNotFoundError(f"data.root: {url} does not exist (one of the "
                                    f"{plural(len(named), 'shard')} {root} names)")
        else:
            raise FileNotFoundError(f"data.root: {url} does not exist (give a shard, a folder "
                                    "or a list of shards)")
    if not urls:
        raise FileNotFoundError(f"data.root: no .tar shards in {root}")
    return [os.path.expanduser(u) for u in urls]


def _stat(url: str) -> tuple[int, int | str | None]:
    """A shard's (size, mtime): nanoseconds for a local file, what the store says for a remote
    one (None where it says nothing)."""
    if is_local(url):
        stat = os.stat(url.removeprefix("file://"))
        return stat.st_size, stat.st_mtime_ns
    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "created")
                  if info.get(k) is not None), None)
    return int(info["size"]), None if stamp is None else str(stamp)


def cache_place(url: str, size: int, mtime: int | str | None) -> str:
    """Where mim's cache keeps the index of this shard: keyed by its path, size and mtime, so
    a shard rewritten in place gets an index of its own."""
    where = os.path.abspath(url) if is_local(url) and "://" not in url else url
    digest = hashlib.blake2b(f"{where}\n{size}\n{mtime}".encode(), digest_size=10).hexdigest()
    return str(cache_root() / "shard_index" / (digest + INDEX_SUFFIX))


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


def header_digest(url: str, members: list) -> str:
    """A digest of the shard's first block and of the 512-byte tar header blocks of a few
    recorded members (the block right before each one's data), read by offset: a shard
    rewritten with other or reordered members no longer matches its index, even at one size."""
    picks = sorted({n * (len(members) - 1) // max(HEADER_SAMPLES - 1, 1)
                    for n in range(HEADER_SAMPLES)} if members else set())
    digest = hashlib.blake2b(digest_size=16)
    with fsspec.open(url, "rb") as f:
        for offset in [0, *(members[n][1] - 512 for n in picks)]:
            f.seek(max(offset, 0))
            digest.update(f.read(512))
    return digest.hexdigest()


def _cached(url: str, place: str, size: int) -> dict | None:
    """The index at ``place`` when it is this shard's (its size and tar headers), else None
    (said in the log where one was there but stale or unreadable)."""
    try:
        with fsspec.open(place, "rt") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("shard index %s unreadable (%s); rebuilt", place, exc)
        return None
    if index.get("version") != INDEX_VERSION:
        log.info("shard index %s was made by another mim version; rebuilt", place)
    elif index.get("size") != size:
        log.info("shard index %s was made for another shard (of %d bytes, not %d); rebuilt",
                 place, index.get("size"), size)
    elif index.get("headers") != header_digest(url, index["members"]):
        log.warning("shard index %s is stale: the shard was rewritten since (its tar headers "
                    "are not where the index says); rebuilt", place)
    else:
        return index
    return None


def shard_index(url: str, beside: bool = False) -> dict:
    """The index of one shard, ``{"size", "mtime", "headers", "members": [[name, offset,
    size]], "damage"}``: beside the shard (a remote one's too: ``mim data pack`` wrote it before
    the upload) or in the cache when it is this shard's, else built and written to the cache,
    or beside a local shard with ``beside`` (the shard is mim's own pack's)."""
    size, mtime = _stat(url)
    cached = cache_place(url, size, mtime)
    for place in (url + INDEX_SUFFIX, cached):
        index = _cached(url, place, size)
        if index is not None:
            return index
    members, damage = scan_members(url)
    index = {"version": INDEX_VERSION, "size": size, "mtime": mtime,
             "headers": header_digest(url, members), "members": members, "damage": damage}
    places = [url.removeprefix("file://") + INDEX_SUFFIX] if beside and is_local(url) else []
    for place in [*places, cached]:  # the cache where the pack's folder is not writable
        try:
            write_json(place, index)
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


@dataclass(frozen=True)
class Indexed:
    """The shards' items, in shard then tar order, and what was found on the way."""

    items: list[Item]
    skipped: list[tuple[str, str]]  # (shard, reason): unreadable, or a damaged tail
    sizes: list[int | None]  # bytes of each shard as indexed (None: unreadable)
    counts: list[int | None]  # items (keys) of each shard (None: unreadable)


def index_shards(urls: list[str], beside: frozenset[str] = frozenset()) -> Indexed:
    """Every item of the shards, in shard then tar order, and the shards (or their tails)
    skipped with the reason: a shard that cannot be read at all, or a damaged tail. A new index
    of a shard in ``beside`` (mim's own pack) is written beside it, others into the cache."""
    def read(url: str) -> dict | OSError:
        try:
            return shard_index(url, url in beside)
        except OSError as exc:
            return exc

    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    sizes: list[int | None] = []
    counts: list[int | None] = []
    with ThreadPoolExecutor(INDEX_THREADS) as pool:  # I/O-bound: remote headers, many shards
        indices = list(pool.map(read, urls))
    for number, (url, index) in enumerate(zip(urls, indices)):
        if isinstance(index, OSError):
            skipped.append((url, f"{type(index).__name__}: {index}"))
            sizes.append(None)
            counts.append(None)
            continue
        if index["damage"]:
            skipped.append((url, f"read up to member {len(index['members'])}: "
                                 f"{index['damage']}"))
        found = group_items(number, index["members"])
        items += found
        sizes.append(index["size"])
        counts.append(len(found))
    for url, reason in skipped:
        log.warning("shard %s: %s; its unreadable part is skipped", url, reason)
    return Indexed(items, skipped, sizes, counts)


# ------------------------------------------------------------------------ a pack's own files
def read_json(url: str) -> tuple[dict | None, bytes | None]:
    """A JSON file of a pack (its manifest or marker): (contents, bytes); (None, None) where
    there is none, (None, bytes) where it is no JSON object."""
    try:
        with fsspec.open(url, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None, None
    try:
        contents = json.loads(data)
    except ValueError:
        return None, data
    return (contents if isinstance(contents, dict) else None), data


def is_manifest(contents: dict | None) -> bool:
    """A manifest ``mim data pack`` wrote (its shards listed by name)."""
    return (isinstance(contents, dict) and isinstance(contents.get("shards"), list)
            and all(isinstance(s, dict) and "name" in s for s in contents["shards"]))


def is_marker(contents: dict | None) -> bool:
    """The marker ``mim data pack`` writes first (the files it writes, listed by name)."""
    return (isinstance(contents, dict) and contents.get("written_by") == "mim data pack"
            and isinstance(contents.get("files"), list))


def pack_files(manifest: dict | None, marker: dict | None) -> set[str]:
    """The names of the files a pack wrote into its folder, by its manifest and marker."""
    names = {MANIFEST, MARKER} if is_manifest(manifest) or is_marker(marker) else set()
    if is_manifest(manifest):
        names |= {str(s["name"]) for s in manifest["shards"]}
        names |= {f"{s['name']}{INDEX_SUFFIX}" for s in manifest["shards"]}
    if is_marker(marker):
        names |= {str(n) for n in marker["files"]}
    return names


def is_pack_temp(name: str, listed: set[str]) -> bool:
    """A temporary file of a pack: ``.NAME.tmp`` (a shard or the manifest before its rename)
    or ``NAME.PID.tmp`` (an index) of a file the pack writes."""
    return name.endswith(".tmp") and (name.startswith(".shard-") or any(
        name == f".{n}.tmp" or name.startswith(f"{n}.") for n in listed | {MANIFEST, MARKER}))


@dataclass(frozen=True)
class Pack:
    """What the shards' folder says about them: ``mim data pack``'s manifest and marker."""

    folder: str | None  # the folder of every shard (None: they are in several)
    manifest: dict | None
    digest: str | None  # sha256 of manifest.json's bytes
    marker: dict | None
    names: frozenset[str]  # the folder's file names (what a pack left there)

    @property
    def listed(self) -> set[str]:
        return pack_files(self.manifest, self.marker)


def shard_folder(urls: list[str]) -> str | None:
    folders = {url.rsplit("/", 1)[0] if "/" in url else "." for url in urls}
    return folders.pop() if len(folders) == 1 else None


def read_pack(urls: list[str]) -> Pack:
    """The manifest and marker of the shards' folder, where they share one."""
    folder = shard_folder(urls)
    if folder is None:
        return Pack(None, None, None, None, frozenset())
    manifest, data = read_json(f"{folder}/{MANIFEST}")
    if data is not None and not is_manifest(manifest):
        log.warning("data.root: %s/%s is not a manifest mim data pack wrote; the shards are "
                    "not checked against it", folder, MANIFEST)
        manifest = None
    marker, _ = read_json(f"{folder}/{MARKER}")
    fs, path = fsspec.core.url_to_fs(folder)
    try:
        names = frozenset(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except OSError:
        names = frozenset()
    digest = hashlib.sha256(data).hexdigest() if manifest is not None else None
    return Pack(folder, manifest, digest, marker if is_marker(marker) else None, names)


def refuse_unfinished(pack: Pack) -> None:
    """A folder of shards with a pack's marker or temporary files and no manifest is a pack
    that was stopped (killed, out of space) before its end: its data is partial."""
    if pack.manifest is not None or pack.folder is None:
        return
    temps = sorted(n for n in pack.names if is_pack_temp(n, pack.listed))
    if pack.marker is None and not temps:
        return
    shards = sorted(n for n in pack.names if n.endswith(".tar"))
    found = ", ".join(filter(None, [plural(len(shards), "shard"),
                                    MARKER if pack.marker else "",
                                    first_names(temps, 2) if temps else ""]))
    raise FileNotFoundError(f"data.root: {pack.folder} holds an interrupted mim data pack "
                            f"({found}; no {MANIFEST}): its data is partial; run the same mim "
                            "data pack again with overwrite=true to finish it")


def check_manifest(pack: Pack, urls: list[str], indexed: Indexed) -> None:
    """One warning where the shards read are not those the manifest lists: missing or extra
    shards, or shards of another size or item count than packed."""
    if pack.manifest is None:
        return
    packed = {str(s["name"]): s for s in pack.manifest["shards"]}
    names = [url.rsplit("/", 1)[-1] for url in urls]
    missing = [n for n in packed if n not in names]
    extra = [n for n in names if n not in packed]
    changed = [n for n, size, count in zip(names, indexed.sizes, indexed.counts)
               if n in packed and (size, count) != (packed[n].get("bytes"),
                                                     packed[n].get("items"))]
    found = [f"{plural(len(missing), 'shard')} it lists missing ({first_names(missing)})"
             if missing else "", f"{len(extra)} not in it ({first_names(extra)})" if extra
             else "", f"{len(changed)} of another size or item count ({first_names(changed)})"
             if changed else ""]
    if any(found):
        log.warning("data.root: the shards differ from %s/%s: %s; this is not the data that was "
                    "packed (pack it again, or name the shards meant)", pack.folder, MANIFEST,
                    "; ".join(filter(None, found)))


@dataclass(frozen=True)
class Shards:
    """The shards ``data.root`` names, indexed and checked against their pack's manifest."""

    root: str
    urls: list[str]
    indexed: Indexed
    pack: Pack
    reader: ShardReader

    @property
    def damaged(self) -> int:
        return len(self.indexed.skipped)

    def accepted(self, accept: Callable[[str], bool], what: str) -> list[tuple[Item, str]]:
        """(item, the extension of its first member ``accept(file name)`` takes) for every item
        holding one; FileNotFoundError where none does, a warning where fewer items than the
        manifest counts are ``what`` (e.g. "image")."""
        found = [(item, next((e for e in item.members if accept(f"x.{e}")), None))
                 for item in self.indexed.items]
        kept = [(item, ext) for item, ext in found if ext]
        if not kept:
            raise FileNotFoundError(
                f"data.root: no {what} members in the {plural(len(self.urls), 'shard')} of "
                f"{self.root}" + (f" ({self.damaged} unreadable)" if self.damaged else ""))
        packed = (self.pack.manifest or {}).get("items")
        if isinstance(packed, int) and len(kept) != packed:
            log.warning("data.root: %d of the %d items %s/%s counts are read as %s (the others "
                        "hold no %s member)", len(kept), packed, self.pack.folder, MANIFEST,
                        what, what)
        return kept

    def identity(self, items: int) -> dict:
        """What the data is (``MimDataset.identity``): the items read, each shard's name and
        size, and the manifest's sha256 (None without one), as JSON values."""
        return {"items": items,
                "shards": [[url.rsplit("/", 1)[-1], size]
                           for url, size in zip(self.urls, self.indexed.sizes)],
                "manifest": self.pack.digest}

    def labels(self, items: list[Item]) -> tuple[list[int], list[str]]:
        """The items' labels (``KEY.cls``: a number or a class name; ``KEY.json``:
        ``{"label": ...}``), read once, -1 where none: class names index the manifest's
        ``classes`` where they cover them, else the names sorted, as a folder's are."""
        values, bad = [], []
        for item in items:
            try:
                values.append(self._label(item))
            except (UnreadableSample, OSError, ValueError, KeyError, TypeError) as exc:
                values.append(None)
                bad.append(f"{item.key} ({exc})")
        if bad:
            log.warning("data.labels=%s: %s unreadable, those items unlabelled; first: %s",
                        LABELS, plural(len(bad), "label"), bad[0])
        if all(v is None or isinstance(v, int) for v in values):
            return [-1 if v is None else v for v in values], self._classes([])
        names = [None if v is None else str(v) for v in values]
        return label_ids(names, self._classes(names) or None)

    def _classes(self, names: list[str | None]) -> list[str]:
        classes = (self.pack.manifest or {}).get("classes") or []
        return list(classes) if set(names) - {None} <= set(classes) else []

    def _label(self, item: Item) -> int | str | None:
        for ext in ("cls", "json"):
            if ext in item.members:
                text = self.reader.read(item.shard, *item.members[ext]).decode().strip()
                value = str(json.loads(text)["label"] if ext == "json" else text).strip()
                return int(value) if value.lstrip("-").isdigit() else value
        return None


def open_shards(root: str) -> Shards:
    """``data.root`` (``shard_urls``) indexed, its pack's manifest read and compared; refused
    (FileNotFoundError) where it is a pack stopped before its end."""
    urls = shard_urls(root)
    pack = read_pack(urls)
    refuse_unfinished(pack)
    beside = frozenset(u for u in urls if u.rsplit("/", 1)[-1] in pack.listed)
    indexed = index_shards(urls, beside)
    check_manifest(pack, urls, indexed)
    return Shards(root, urls, indexed, pack, ShardReader(urls))


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
            try:
                yield Path(f.name)
            except LOAD_ERRORS as exc:  # a reader's reason names the copy: name the member
                if f.name not in str(exc):
                    raise
                raise UnreadableSample(str(exc).replace(f.name, str(self)),
                                       getattr(exc, "kind", None),
                                       getattr(exc, "remedy", None)) from exc


def shard_members(root: str, accept: Callable[[str], bool], what: str
                  ) -> tuple[list[Member], Shards]:
    """The first accepted member (``accept(file name)``) of every item of the shards named by
    ``root`` (``open_shards``), and the shards (their damage, identity and labels)."""
    shards = open_shards(root)
    members = [Member(shards.reader, item, ext) for item, ext in shards.accepted(accept, what)]
    return members, shards
