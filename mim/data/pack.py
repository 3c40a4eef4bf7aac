"""``mim data pack``: a folder or list of files -> WebDataset tar shards, an index per shard and
a manifest.

Files are packed in the order a folder source reads them (``mim.data.files.find_files``: recursive,
sorted), so a run on the shards (``data.format=wds``) sees the folder's items at the same
indices. Only files some registered modality reads (its ``ModalitySpec.accepts``) are items;
the rest (a README, a labels CSV) are skipped, said in one line and counted in the manifest,
and the output's own files are never input. Item ``n`` is key ``%08d``: the file as
``KEY<its suffix>`` (``mim.data.files.file_suffix``: ``.nii.gz`` whole) and, where labels are given
(``labels=folders`` or a CSV, as ``data.labels`` reads them), ``KEY.cls``. With ``max_side``, a
picture whose long side is larger is resized down to it (FFCV-style datasets store pictures
so; Pillow is a core dependency and decides what is a picture).

The marker ``mim-pack.json`` is written first and lists every file the pack writes before it
writes it; each shard is written under a temporary name and renamed; the manifest, last, says
what the shards hold. So a stopped pack is recognisable (a marker, no manifest: a run refuses
it), and ``overwrite=true`` replaces exactly what a pack wrote, refusing a folder that holds
anything else.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from pathlib import Path

from PIL import Image

from mim.config import ConfigError
from mim.data.files import file_labels, file_suffix, find_files
from mim.registry import MODALITIES
from mim.data.shards import (INDEX_SUFFIX, MANIFEST, MARKER, is_pack_temp, pack_files, read_json,
                        shard_index)
from mim.wording import first_names, plural

log = logging.getLogger("mim.data")


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def sources(input: str, output: Path) -> tuple[Path, list[Path]]:
    """(root, files): a folder's files, or a list file's (one path a line, relative to it);
    never the output's own (an output inside its input)."""
    path = Path(input).expanduser()
    if path.is_dir():
        files = [f for f in find_files(path, lambda name: True, "files")
                 if not inside(f, output)]
        if not files:
            raise ConfigError(f"input: no files under {input} outside the output {output}")
        return path, files
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        files = [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not files:
            raise ConfigError(f"input: {input} lists {len(missing)} missing files "
                              f"(first: {missing[0]})" if missing else f"input: {input} is empty")
        return path.parent, [f for f in files if not inside(f, output)]
    raise ConfigError(f"input: {input} is neither a folder nor a list file")


def data_files(files: list[Path], input: str) -> list[Path]:
    """The files some registered modality reads (``ModalitySpec.accepts``); the others are
    skipped, said in one line."""
    accepts = [e.obj.accepts for e in MODALITIES.entries() if e.obj.accepts is not None]
    read = [any(accept(f.name) for accept in accepts) for f in files]
    kept = [f for f, ok in zip(files, read) if ok]
    skipped = [f.name for f, ok in zip(files, read) if not ok]
    if not kept:
        raise ConfigError(f"input: none of the {plural(len(files), 'file')} of {input} is one "
                          f"a modality reads ({first_names(skipped)}); give pictures, videos or "
                          "volumes")
    if skipped:
        log.warning("input: %s no modality reads skipped (%s); %s packed",
                    plural(len(skipped), "file"), first_names(skipped),
                    plural(len(kept), "item"))
    return kept


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
    """The output folder, new or empty; with ``overwrite``, a folder holding a pack (its
    manifest or marker lists the files) emptied of the pack's files, and refused where it holds
    anything else: mim replaces only what it wrote."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: {output} is a file; give a new or empty folder")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        raise ConfigError(f"output: {output} is not empty; give a new or empty folder, or "
                          "overwrite=true")
    listed = pack_files(read_json(str(out / MANIFEST))[0], read_json(str(out / MARKER))[0])
    foreign = [n for n in present if (n not in listed and not is_pack_temp(n, listed))
               or not (out / n).is_file()]
    if foreign:
        raise ConfigError(f"output: {output} holds {plural(len(foreign), 'file')} no mim data "
                          f"pack wrote ({first_names(foreign)}); overwrite=true replaces only a "
                          "pack's own files: give a new or empty folder, or move them")
    for name in present:  # the previous pack's, marker last: a stop here is still recognised
        if name != MARKER:
            (out / name).unlink()
    (out / MARKER).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


class Marker:
    """``mim-pack.json``: mim's own pack, the files it writes listed before each is written."""

    def __init__(self, out: Path, input: str):
        self.path = out / MARKER
        self.contents = {"written_by": "mim data pack", "source": input,
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": []}
        self.add()

    def add(self, *names: str) -> None:
        self.contents["files"] += names
        temp = self.path.with_name(f".{MARKER}.tmp")
        temp.write_text(json.dumps(self.contents, indent=1) + "\n")
        os.replace(temp, self.path)


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
    out_path = Path(output).expanduser()
    root, found = sources(input, out_path)
    files = data_files(found, input)
    try:
        label_of, classes = file_labels(files, root, labels)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc).replace("data.labels", "labels")) from exc
    skipped = len(found) - len(files)
    out = prepare_output(output, overwrite)
    marker = Marker(out, str(input))
    shards = []
    for start in range(0, len(files), shard_size):
        name = f"shard-{len(shards):06d}.tar"
        temp = out / f".{name}.tmp"
        marker.add(temp.name, name, f"{name}{INDEX_SUFFIX}")
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for n in range(start, min(start + shard_size, len(files))):
                key, file = f"{n:08d}", files[n]
                _member(tar, f"{key}{file_suffix(file.name) or '.bin'}",
                        payload(file, max_side))
                if label_of[n] >= 0:
                    _member(tar, f"{key}.cls", str(label_of[n]).encode())
        os.replace(temp, out / name)
        shard_index(str(out / name), beside=True)  # the pack's own folder: INDEX_SUFFIX
        shards.append({"name": name, "items": min(shard_size, len(files) - start),
                       "bytes": (out / name).stat().st_size})
    manifest = {"source": str(input), "items": len(files), "skipped": skipped,
                "shards": shards, "bytes": sum(s["bytes"] for s in shards),
                "shard_size": shard_size, "max_side": max_side,
                "labelled": sum(1 for v in label_of if v >= 0), "classes": classes,
                "index": f"NAME.tar{INDEX_SUFFIX}"}
    marker.add(f".{MANIFEST}.tmp", MANIFEST)
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
