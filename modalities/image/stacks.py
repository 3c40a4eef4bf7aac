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
import csv
import datetime
import math
import re
from dataclasses import dataclass, field
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


NAN = float("nan")


@dataclass(frozen=True)
class Dating:
    """Where a file's date and place come from: ``data.coords_file``'s row for it, else the
    date in its name (``data.date_pattern``) and the GeoTIFF's georeference."""

    pattern: re.Pattern
    table: dict[str, tuple[datetime.date | None, float, float]] = field(default_factory=dict)

    def date(self, path: Path) -> datetime.date:
        row = self.table.get(str(path))
        if row is not None and row[0] is not None:
            return row[0]
        match = self.pattern.search(path.name)
        if match is None:
            raise UnreadableSample(f"{path.name}: no date in its name (data.date_pattern: "
                                   f"{self.pattern.pattern}) or data.coords_file", "no date")
        try:
            return parse_date(match.group(1))
        except ValueError:
            raise UnreadableSample(f"{path.name}: '{match.group(1)}' is not a date",
                                   "no date") from None

    def place(self, path: Path) -> tuple[float, float]:
        row = self.table.get(str(path))
        if row is not None and not math.isnan(row[1]):
            return row[1], row[2]
        return location(path)

    def when(self, path: Path) -> tuple[float, float]:
        """(year, day of the year); NaN where the file has no date."""
        try:
            date = self.date(path)
        except UnreadableSample:
            return NAN, NAN
        return float(date.year), float(date.timetuple().tm_yday)

    def coords(self, paths: list[Path]) -> torch.Tensor:
        """[T, 4]: per file (a date) its (year, day of the year), and the place of the first
        file that says one."""
        places = (self.place(path) for path in paths)
        place = next((p for p in places if not math.isnan(p[0])), (NAN, NAN))
        return torch.tensor([[*self.when(path), *place] for path in paths])


def _cell(text: str, line: int, key: str) -> float:
    try:
        return float(text) if text.strip() else NAN
    except ValueError:
        raise ValueError(f"data.coords_file: line {line}: {key} '{text}' is not a number") \
            from None


def read_coords_file(path: str, root: Path) -> dict[str, tuple[datetime.date | None, float,
                                                              float]]:
    """``data.coords_file``: a CSV with a header naming ``path`` and any of ``date``, ``lat``,
    ``lon``; ``path`` relative to data.root (or absolute), an empty cell unknown ->
    {absolute path: (date, latitude, longitude)}; ValueError naming the line of a bad value."""
    with open(Path(path).expanduser(), newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = {}
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise ValueError(f"data.coords_file: line {line}: no path (the header names "
                             "path,date,lat,lon)")
        text = (row.get("date") or "").strip()
        try:
            date = parse_date(text) if text else None
        except ValueError:
            raise ValueError(f"data.coords_file: line {line}: '{text}' is not a date "
                             "(YYYY-MM-DD, YYYYMMDD or YYYYDDD)") from None
        full = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
        table[str(full)] = (date, _cell(row.get("lat") or "", line, "lat"),
                            _cell(row.get("lon") or "", line, "lon"))
    return table


def stack_folders(files: list[Path]) -> list[list[Path]]:
    """The files grouped by their folder (a sample each), folders in path order."""
    ordered = sorted(files, key=lambda p: (str(p.parent), p.name))
    return [list(group) for _, group in groupby(ordered, key=lambda p: p.parent)]


class RasterStacks(MimDataset):
    def __init__(self, stacks: list[list[Path]], transform, bands: BandReader, steps: int,
                 dating: Dating, coords: bool = False):
        self.stacks, self.transform, self.bands = stacks, transform, bands
        self.give_coords = coords
        self.steps, self.dating = steps, dating
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
        dated = sorted((self.dating.date(f), f) for f in files)
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
            place = self.dating.place(self.stacks[index][0])
            return torch.tensor([[NAN, NAN, *place]] * self.bands.dates)  # [T, 4]
        return self.dating.coords([path for _, path in self.dated(index)])

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
