"""Images in WebDataset tar shards (``data.format=wds``): one item per key holding an image.

The items are indexed once by the core (``mim/shards.py``) in shard and tar order, so shards
packed from a folder by ``mim data pack`` give the folder's items at the same indices, and a run
on them draws the same samples, crops and masks. ``load`` reads the member's bytes by offset
and decodes them as ``dataset.py`` decodes a file; a label travels as ``KEY.cls`` (an integer)
or ``KEY.json`` (``{"label": N}``). Members that cannot be read or decoded raise
``UnreadableSample``: the core replaces and counts them as it does broken files.
"""
from __future__ import annotations

import copy
import json
import logging

import torch

from mim.data import MimDataset, UnreadableSample
from mim.shards import Item, ShardReader, index_shards, shard_urls
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.decode import read
from mim.modalities.image.transforms import PretrainTransform

log = logging.getLogger("mim.data")


def image_member(item: Item, extensions: set[str]) -> str | None:
    """The extension of the item's image member (the first in the tar), or None."""
    return next((ext for ext in item.members if f".{ext}" in extensions), None)


class ImageShards(MimDataset):
    def __init__(self, items: list[Item], images: list[str], reader: ShardReader,
                 transform: PretrainTransform):
        self.items, self.images, self.reader, self.transform = items, images, reader, transform

    def __len__(self) -> int:
        return len(self.items)

    def at_shape(self, shape: tuple[int, ...]) -> "ImageShards":
        """The same items cropped to ``shape`` (3, H, W) (progressive resolution); the reader
        is shared (one per worker process)."""
        other = copy.copy(self)
        other.transform = self.transform.resized(shape[-1])
        return other

    def describe(self, index: int) -> str:
        return self.reader.describe(self.items[index], self.images[index])

    def label(self, item: Item) -> int:
        for ext in ("cls", "json"):
            if ext in item.members:
                text = self.reader.read(item.shard, *item.members[ext]).decode()
                try:
                    return int(json.loads(text)["label"] if ext == "json" else text.strip())
                except (ValueError, KeyError, TypeError) as exc:
                    raise UnreadableSample(f"label {item.key}.{ext}: {text[:40]!r} is not an "
                                           "integer label", "bad label") from exc
        return -1

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        data = self.reader.read(item.shard, *item.members[self.images[index]])
        try:
            picture = read(data, lambda w, h: self.transform.resolution(w, h, seed))
        except Exception as exc:  # PIL raises many types, as for files (dataset.py)
            if not data:
                raise UnreadableSample("empty member (0 bytes)", "empty") from exc
            raise UnreadableSample(f"{type(exc).__name__}: {exc}",
                                   "not an image (cannot be decoded)") from exc
        return self.transform(picture, seed), self.label(item)


def build_shards(cfg: ImageDataConfig, extensions: set[str]) -> ImageShards:
    urls = shard_urls(str(cfg.root))
    items, skipped = index_shards(urls)
    kept = [(item, ext) for item in items if (ext := image_member(item, extensions))]
    if not kept:
        raise FileNotFoundError(f"data.root: no image members in the {len(urls)} shards of "
                                f"{cfg.root}" + (f" ({len(skipped)} unreadable)" if skipped
                                                 else ""))
    log.info("image data: %d items in %d shards of %s%s", len(kept), len(urls), cfg.root,
             f"; {len(skipped)} shards damaged, their unreadable part skipped" if skipped
             else "")
    return ImageShards([i for i, _ in kept], [e for _, e in kept], ShardReader(urls),
                       PretrainTransform(cfg))
