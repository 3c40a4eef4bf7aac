"""``mim data pack``: a folder or list of files -> WebDataset tar shards, an index per shard and
a manifest.

Files are packed in the order a folder source reads them (``mim.files.find_files``: recursive,
sorted), so a run on the shards (``data.format=wds``) sees the folder's items at the same
indices. Item ``n`` is key ``%08d``: the file as ``KEY.<its extension>`` and, where labels are
given (``labels=folders`` or a CSV, as ``data.labels`` reads them), ``KEY.cls``. With
``max_side``, a picture whose long side is larger is resized down to it (FFCV-style datasets
store pictures so; Pillow is a core dependency and decides what is a picture). Each shard is
written under a temporary name and renamed; the manifest, last, says what the shards hold.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from PIL import Image

from mim.config import ConfigError
from mim.files import file_labels, find_files
from mim.shards import INDEX_SUFFIX, shard_index

MANIFEST = "manifest.json"


def sources(input: str) -> tuple[Path, list[Path]]:
    """(root, files): a folder's files, or a list file's (one path a line, relative to it)."""
    path = Path(input).expanduser()
    if path.is_dir():
        return path, find_files(path, lambda name: True, "files")
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        files = [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not files:
            raise ConfigError(f"input: {input} lists {len(missing)} missing files "
                              f"(first: {missing[0]})" if missing else f"input: {input} is empty")
        return path.parent, files
    raise ConfigError(f"input: {input} is neither a folder nor a list file")


def payload(file: Path, max_side: int | None) -> bytes:
    """The file's bytes; a picture larger than ``max_side`` re-encoded smaller, same format."""
    data = file.read_bytes()
    if not max_side:
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) <= max_side:
                return data
            kind = image.format
            image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            out = io.BytesIO()
            image.save(out, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):  # not a picture: as it is
        return data


def prepare_output(output: str, overwrite: bool) -> Path:
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {output} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output: {output} is not empty; give a new or empty folder, or "
                              "overwrite=true")
        # a smaller pack over a larger one must not leave old shards; other files stay
        for old in [*out.glob("shard-*.tar"), *out.glob(f"shard-*.tar{INDEX_SUFFIX}"),
                    out / MANIFEST]:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # mtime 0: the same input packs alike
    tar.addfile(info, io.BytesIO(data))


def pack(input: str, output: str, shard_size: int = 1000, max_side: int | None = None,
         labels: str = "none", overwrite: bool = False) -> Path:
    """Write the shards, their indices and ``manifest.json`` into ``output``; return the
    manifest's path."""
    if shard_size < 1:
        raise ConfigError(f"shard_size: must be >= 1, got {shard_size}")
    if max_side is not None and max_side < 1:
        raise ConfigError(f"max_side: must be >= 1 or null, got {max_side}")
    root, files = sources(input)
    try:
        label_of, classes = file_labels(files, root, labels)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc).replace("data.labels", "labels")) from exc
    out = prepare_output(output, overwrite)
    shards = []
    for start in range(0, len(files), shard_size):
        name = f"shard-{len(shards):06d}.tar"
        temp = out / f".{name}.tmp"
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for n in range(start, min(start + shard_size, len(files))):
                key, file = f"{n:08d}", files[n]
                _member(tar, f"{key}{file.suffix.lower() or '.bin'}", payload(file, max_side))
                if label_of[n] >= 0:
                    _member(tar, f"{key}.cls", str(label_of[n]).encode())
        os.replace(temp, out / name)
        shard_index(str(out / name))  # cached beside it: INDEX_SUFFIX
        shards.append({"name": name, "items": min(shard_size, len(files) - start),
                       "bytes": (out / name).stat().st_size})
    manifest = {"source": str(input), "items": len(files), "shards": shards,
                "bytes": sum(s["bytes"] for s in shards), "shard_size": shard_size,
                "max_side": max_side, "labelled": sum(1 for v in label_of if v >= 0),
                "classes": classes, "index": f"NAME.tar{INDEX_SUFFIX}"}
    temp = out / f".{MANIFEST}.tmp"
    temp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temp, out / MANIFEST)
    return out / MANIFEST


def pack_command(args: list[str]) -> Path:
    """``mim data pack key=value ...``, in the grammar of every command, checked, then run."""
    from mim.config.overrides import apply, parse, plain

    if not args or args[0] != "pack":
        raise ConfigError("data: the subcommand is pack (mim data pack input=DIR output=DIR)")
    tree = {"input": None, "output": None, "shard_size": 1000, "max_side": None,
            "labels": "none", "overwrite": False}
    c = plain(apply(tree, parse(args[1:])[1]), "")
    for key in ("input", "output"):
        if c[key] is None:
            raise ConfigError(f"{key}: required (mim data pack input=DIR output=DIR)")
    for key in ("shard_size", "max_side"):
        if type(c[key]) is not int and not (key == "max_side" and c[key] is None):
            raise ConfigError(f"{key}: {c[key]!r} is not an integer")
    if not isinstance(c["overwrite"], bool):
        raise ConfigError(f"overwrite: {c['overwrite']!r} is not one of: true, false")
    return pack(str(c["input"]), str(c["output"]), c["shard_size"], c["max_side"],
                str(c["labels"]), c["overwrite"])
