"""Images in WebDataset tar shards (``data.format=wds``): one item per key holding an image.

The items are indexed once by the core (``mim/data/shards.py``) in shard and tar order, so shards
packed from a folder by ``mim data pack`` give the folder's items at the same indices, and a run
on them draws the same samples, crops and masks. ``load`` reads the member's bytes by offset
and decodes them as ``dataset.py`` decodes a file. Labels are read only with
``data.labels=shards`` (``KEY.cls`` or ``KEY.json``, numbers or class names): a run that uses
none reads none. Members that cannot be read or decoded raise ``UnreadableSample``: the core
replaces and counts them as it does broken files.
"""
from __future__ import annotations

import copy
from functools import lru_cache
import logging
import re
from typing import Callable

import torch

from mim.data import MimDataset, UnreadableSample
from mim.data.files import stamp
from mim.data.shards import LABELS, Item, Shards, open_shards
from mim.wording import plural
from mim.modalities.image.bands import BandReader, Items
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.decode import read
from mim.modalities.image.transforms import PretrainTransform

log = logging.getLogger("mim.data")
# how PIL names a picture it was handed as bytes; a message names the member instead
BUFFER = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class ImageShards(MimDataset):
    def __init__(self, shards: Shards, items: list[Item], images: list[str],
                 labels: list[int], transform: PretrainTransform, classes: list[str],
                 bands: BandReader | None = None):
        self.shards, self.items, self.images = shards, items, images
        self.labels, self.transform, self.classes = labels, transform, classes
        self.reader, self.bands = shards.reader, bands
        self.nodata = bands is not None and bands.nodata is not None

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> dict:
        return self.shards.identity(len(self))

    def at_shape(self, shape: tuple[int, ...]) -> "ImageShards":
        """The same items cropped to ``shape`` (3, H, W) (progressive resolution); the reader
        is shared (one per worker process)."""
        other = copy.copy(self)
        other.transform = self.transform.resized(shape[-1])
        return other

    def describe(self, index: int) -> str:
        return self.reader.describe(self.items[index], self.images[index])

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        data = self.reader.read(item.shard, *item.members[self.images[index]])
        if self.bands is not None:  # a raster member, read as its file would be
            x = torch.from_numpy(self.bands(data, f"member.{self.images[index]}"))  # [C, H, W]
            return self.transform(x, seed), self.labels[index]
        try:
            picture = read(data, lambda w, h: self.transform.resolution(w, h, seed))
        except UnreadableSample:  # a 16-bit picture among photos
            raise
        except Exception as exc:  # PIL raises many types, as for files (dataset.py)
            if not data:
                raise UnreadableSample("empty member (0 bytes)", "empty") from exc
            reason = BUFFER.sub(self.describe(index), f"{type(exc).__name__}: {exc}")
            raise UnreadableSample(reason, "not an image (cannot be decoded)") from exc
        return self.transform(picture, seed), self.labels[index]


def _accepted(cfg: ImageDataConfig, accept: Callable[[str], bool]) -> tuple[Shards, list]:
    """The shards and their image members, opened (and warned about) once for validation and
    the plan where the root is a local folder or list; a URL or a pattern each time."""
    root = str(cfg.root)
    when = stamp(root)
    return _opened(root, when, accept) if when is not None else _open(root, accept)


def _open(root: str, accept: Callable[[str], bool]) -> tuple[Shards, list]:
    shards = open_shards(root)
    return shards, shards.accepted(accept, "image")


@lru_cache(maxsize=2)
def _opened(root: str, when: tuple, accept: Callable[[str], bool]) -> tuple[Shards, list]:
    return _open(root, accept)  # ``when``: the folder's stamp, part of the key


def shard_items(cfg: ImageDataConfig, accept: Callable[[str], bool]) -> Items:
    """The shards' image members as ``bands.resolve`` reads them (name, bytes)."""
    shards, kept = _accepted(cfg, accept)
    return Items(len(kept), lambda i: f"member.{kept[i][1]}",
                 lambda i: shards.reader.read(kept[i][0].shard, *kept[i][0].members[kept[i][1]]))


def build_shards(cfg: ImageDataConfig, accept: Callable[[str], bool], transform,
                 bands: BandReader | None = None) -> ImageShards:
    shards, kept = _accepted(cfg, accept)
    items = [item for item, _ in kept]
    labels, classes = (shards.labels(items) if cfg.labels == LABELS
                       else ([-1] * len(items), []))
    log.info("image data: %d items in %s of %s%s", len(kept), plural(len(shards.urls), "shard"),
             cfg.root, f"; {plural(shards.damaged, 'shard')} damaged, their unreadable part "
             "skipped" if shards.damaged else "")
    return ImageShards(shards, items, [ext for _, ext in kept], labels, transform, classes,
                       bands)
