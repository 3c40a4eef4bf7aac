"""Time stacks (``data.time_steps=T``): a folder per sample holding one raster per date, or
(``data.stack=file``) a file per sample holding its T dates of C bands, date-major (a
multi-page TIFF) -> ``[C, T, H, W]``, the dates in order (Prithvi-EO's multi-temporal input).

Each file is read to the run's bands by ``BandReader`` as a single raster is; the date of each
comes from its name (``data.date_pattern``: YYYYMMDD, YYYY-MM-DD, or HLS's YYYYDDD). A stack
that cannot be one of the run's samples is an ``UnreadableSample``, replaced and counted: another
number of dates, a file without a date or two of one date, dates of other sizes.
"""
from __future__ import annotations

import copy
import datetime
import re
from itertools import groupby
from pathlib import Path

import torch

from mim.data import MimDataset, UnreadableSample
from mim.modalities.image.bands import BandReader
from mim.modalities.image.raster import location


def parse_date(text: str) -> datetime.date:
    """YYYY-MM-DD, YYYYMMDD or YYYYDDD (day of the year) -> a date; ValueError otherwise."""
    digits = text.replace("-", "")
    if len(digits) == 7:
        return datetime.date(int(digits[:4]), 1, 1) + datetime.timedelta(int(digits[4:]) - 1)
    return datetime.datetime.strptime(digits, "%Y%m%d").date()


def file_date(path: Path, pattern: re.Pattern) -> datetime.date:
    match = pattern.search(path.name)
    if match is None:
        raise UnreadableSample(f"{path.name}: no date in its name (data.date_pattern: "
                               f"{pattern.pattern})", "no date")
    try:
        return parse_date(match.group(1))
    except ValueError:
        raise UnreadableSample(f"{path.name}: '{match.group(1)}' is not a date",
                               "no date") from None


def date_coords(path: Path, pattern: re.Pattern) -> tuple[float, float]:
    """(year, day of the year) of the date in a file's name; NaN where it has none."""
    try:
        date = file_date(path, pattern)
    except UnreadableSample:
        return float("nan"), float("nan")
    return float(date.year), float(date.timetuple().tm_yday)


def sample_coords(dated: list[tuple[Path, ...]] | list[Path], pattern: re.Pattern
                  ) -> torch.Tensor:
    """[T, 4]: per file (a date) its (year, day of the year), and the first file's place."""
    place = location(dated[0])
    return torch.tensor([[*date_coords(path, pattern), *place] for path in dated])


def stack_folders(files: list[Path]) -> list[list[Path]]:
    """The files grouped by their folder (a sample each), folders in path order."""
    ordered = sorted(files, key=lambda p: (str(p.parent), p.name))
    return [list(group) for _, group in groupby(ordered, key=lambda p: p.parent)]


class RasterStacks(MimDataset):
    def __init__(self, stacks: list[list[Path]], transform, bands: BandReader, steps: int,
                 pattern: str, coords: bool = False):
        self.stacks, self.transform, self.bands = stacks, transform, bands
        self.give_coords = coords
        self.steps, self.pattern = steps, re.compile(pattern)
        self.labels, self.classes = [-1] * len(stacks), []
        self.nodata = bands.nodata is not None

    def __len__(self) -> int:
        return len(self.stacks)

    def describe(self, index: int) -> str:
        """The stack's folder, or its file (``data.stack=file``)."""
        first = self.stacks[index][0]
        return str(first if self.bands.dates > 1 else first.parent)

    def at_shape(self, shape: tuple[int, ...]) -> "RasterStacks":
        other = copy.copy(self)
        other.transform = self.transform.resized(shape[-1])
        return other

    def dated(self, index: int) -> list[tuple[datetime.date, Path]]:
        """The stack's files by date; ``UnreadableSample`` for another count or a date missing
        or repeated."""
        files = self.stacks[index]
        if len(files) != self.steps:
            raise UnreadableSample(f"{len(files)} dates, where data.time_steps={self.steps}",
                                   "other date count")
        dated = sorted((file_date(f, self.pattern), f) for f in files)
        repeated = [d for (d, _), (e, _) in zip(dated, dated[1:]) if d == e]
        if repeated:
            raise UnreadableSample(f"two files of {repeated[0]}", "repeated date")
        return dated

    def coords(self, index: int) -> torch.Tensor | None:
        """[T, 4]: the dates of the stack's files, in order, and its place (``data.coords``); a
        stack stored as one file has no dates per page (NaN)."""
        if not self.give_coords:
            return None
        if self.bands.dates > 1:
            nan = float("nan")
            place = location(self.stacks[index][0])
            return torch.tensor([[nan, nan, *place]] * self.bands.dates)  # [T, 4]
        return sample_coords([path for _, path in self.dated(index)], self.pattern)

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        if self.bands.dates > 1:  # a file per stack, its dates stored in order
            path = self.stacks[index][0]
            return self.transform(torch.from_numpy(self.bands(path, path.name)), seed), \
                self.labels[index]  # [C, T, H, W]
        frames = [torch.from_numpy(self.bands(path, path.name))  # each [C, H, W]
                  for _, path in self.dated(index)]
        sizes = sorted({tuple(f.shape[1:]) for f in frames})
        if len(sizes) > 1:
            raise UnreadableSample(f"dates of other sizes ({', '.join(map(str, sizes))})",
                                   "other size")
        x = torch.stack(frames, dim=1)  # [C, T, H, W]
        return self.transform(x, seed), self.labels[index]
