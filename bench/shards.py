"""Figure 9: the image loader on WebDataset shards (``data.format=wds``) against the same
pictures as a folder, one worker.

One item = ``dataset[(index, seed)]`` as a loader worker calls it: the folder reads a file, the
shard dataset one member by offset from a shard it keeps open; both then decode, crop, flip and
normalise alike (``ImageFolder`` / ``ImageShards``). The same files (figure 8's ImageNet-sized
JPEGs, packed by ``mim data pack`` into 4 shards) in the same order and seeds, in one round
robin, wall-clock (the reads are part of what is timed), one torch thread.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from bench.harness import Row, Settings, round_robin
from bench.pipeline import jpegs
from mim.data import sample_seed


def _items(dataset, count: int):
    position = [0]

    def items() -> None:
        for _ in range(count):
            index = position[0]
            position[0] += 1
            dataset[(index % len(dataset), sample_seed(0, 0, index))]

    return items


def run(settings: Settings) -> list[Row]:
    from mim.modalities.image.config import ImageDataConfig
    from mim.modalities.image.dataset import build_dataset
    from mim.data.pack import pack

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    files, count = ((500, 375, 4), 4) if settings.quick else ((500, 375, 32), 64)
    paths = jpegs(*files)
    work = Path(tempfile.mkdtemp(prefix="mim-bench-shards-"))
    try:
        folder = work / "folder"
        folder.mkdir()
        for path in paths:  # only these files: the folder dataset scans its root
            os.symlink(path, folder / path.name)
        pack(str(folder), str(work / "shards"), shard_size=max(1, len(paths) // 4))
        size = 32 if settings.quick else 224
        cases = {"folder": _items(build_dataset(ImageDataConfig(root=str(folder), input_size=size)),
                                  count),
                 "shards": _items(build_dataset(ImageDataConfig(root=str(work / "shards"),
                                                                input_size=size, format="wds")),
                                  count)}
        t = round_robin(cases, settings)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
    return [Row(f"9. image loader, WebDataset shards vs the same JPEGs as a folder (items/s, 1 "
                f"thread, {count} per round)", t.ratio("folder", "shards"),
                f"shards {count / t.median('shards'):.1f} / folder "
                f"{count / t.median('folder'):.1f} items/s")]
