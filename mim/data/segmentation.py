"""Labelled maps for ``mim eval segment``, whatever the modality: pairing images with their
annotations, the checks every pair passes, and the training crops.

A modality lists (image, annotation) pairs and reads them (``read(index) -> (x [C, *spatial]
float, normalised; label [*spatial] integer)``); everything after that is here:

- ``pair_by_stem``: an image without an annotation, or an annotation without an image, is left
  out, counted, and named in one line per kind.
- ``scan``: every annotation is read once before training (``SegmentRules``): one of another
  size than its image, an RGB annotation where class ids are expected, or a class id at or
  above the class count that is not the ignore index is left out, counted and named; the class
  count is the largest id + 1 unless the names or ``segment.num_classes`` give it. What each
  pair's checks found is kept in mim's cache (``segment_scan/``), keyed by both files' sizes
  and modification times, so a later evaluation of the same set reads only the pairs that
  changed (ADE20K's 22,210 annotations are read once, not once per run).
- ``SegmentItems``: the items as ``Sample(x, label)``; ``reduce_zero_label`` (ADE20K's "other",
  0, becomes the ignore index, every other id one lower, as mmseg's ``LoadAnnotations``);
  pixels without data (NaN in any band) are ignored; training items are rescaled (linear for
  the image, nearest for the label), cropped to the input size (padded with 0, the mean after
  normalisation, and the ignore index) and flipped per axis, all drawn from the sample's seed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mim.data.cache import cache_root, write_json
from mim.data.dataset import LOAD_ERRORS, MimDataset, UnreadableSample
from mim.wording import plural

log = logging.getLogger("mim.data")


@dataclass(frozen=True)
class SegmentRules:
    """What annotations mean (``segment.num_classes``, ``ignore_index``,
    ``reduce_zero_label``)."""

    num_classes: int | None = None
    ignore_index: int = 255
    reduce_zero_label: bool = False


def stem(path: Path) -> str:
    """A file's name without its suffixes (``case_001.nii.gz`` -> ``case_001``)."""
    name = path.name
    return name[: name.index(".")] if "." in name else name


def pair_by_stem(images: Sequence[Path], labels: Sequence[Path],
                 where: str) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of the same stem, in image order; the unpaired named."""
    by_stem = {stem(p): p for p in labels}
    pairs = [(p, by_stem[stem(p)]) for p in images if stem(p) in by_stem]
    paired = {stem(p) for p, _ in pairs}
    lone_images = [p for p in images if stem(p) not in by_stem]
    lone_labels = [p for p in labels if stem(p) not in paired]
    if lone_images:
        log.warning("%s: %s without an annotation left out (first: %s)", where,
                    plural(len(lone_images), "image"), lone_images[0])
    if lone_labels:
        log.warning("%s: %s without an image left out (first: %s)", where,
                    plural(len(lone_labels), "annotation"), lone_labels[0])
    return pairs


def split_pairs(pairs: Sequence[tuple[Path, Path]], fraction: float,
                seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(training, held-out) pairs: a seeded ``fraction`` held out (at least one where there
    are two or more pairs), order kept."""
    count = len(pairs)
    held = min(count - 1, max(1, round(count * fraction))) if count > 1 else 0
    order = list(range(count))
    random.Random(seed).shuffle(order)
    out = set(order[:held])
    return ([p for i, p in enumerate(pairs) if i not in out],
            [p for i, p in enumerate(pairs) if i in out])


def reduce_zero(label: np.ndarray, ignore: int) -> np.ndarray:
    """0 -> ignore, every other id one lower, ignore kept (mmseg's ``reduce_zero_label``)."""
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == ignore)] = ignore
    return out


def mapped(label: np.ndarray, rules: SegmentRules) -> np.ndarray:
    """An annotation's ids as the protocol sees them (int64)."""
    if rules.reduce_zero_label:
        return reduce_zero(label, rules.ignore_index)
    return label.astype(np.int64)


@dataclass
class Scanned:
    """The pairs every check passed, and the class count."""

    pairs: list[tuple[Path, Path]]
    num_classes: int


def _largest_id(label: np.ndarray, ignore: int) -> int:
    ids = np.unique(label)
    ids = ids[ids != ignore]
    return int(ids.max()) if ids.size else -1


SCAN_VERSION = 1  # raise when what a pair's checks find changes


def _stamp(path: Path) -> list:
    """[size, mtime_ns] of a file; [[name, size, mtime_ns], ...] of a folder's files (a time
    stack's dates)."""
    if path.is_dir():
        return sorted([p.name, *_stamp(p)] for p in path.iterdir() if p.is_file())
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


class ScanCache:
    """What each pair's checks found in earlier scans of the same set: ``["ok", largest id]``
    or ``["refused", kind, reason]``, valid while both files' stamps are those recorded."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], rules: SegmentRules, key: str):
        folders = sorted({str(Path(p).parent.resolve()) for pair in pairs for p in pair})
        digest = hashlib.blake2b(json.dumps([SCAN_VERSION, rules.ignore_index,
                                             rules.reduce_zero_label, key, folders]).encode(),
                                 digest_size=12).hexdigest()
        self.path = cache_root() / "segment_scan" / f"{digest}.json"
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.fresh: dict[str, list] = {}
        self.hits = 0

    def get(self, image: Path, label: Path) -> tuple[list | None, list | None]:
        """(both files' stamps, the recorded outcome where they match); stamps None for a file
        that is gone (its checks will say so, and nothing is kept)."""
        try:
            stamp = [_stamp(image), _stamp(label)]
        except OSError:
            return None, None
        entry = self.entries.get(f"{image}\n{label}")
        if entry is not None and entry[0] == stamp:
            self.fresh[f"{image}\n{label}"] = entry
            self.hits += 1
            return stamp, entry[1]
        return stamp, None

    def put(self, image: Path, label: Path, stamp: list | None, outcome: list) -> None:
        if stamp is not None:
            self.fresh[f"{image}\n{label}"] = [stamp, outcome]

    def save(self) -> None:
        """The entries of this scan (those of pairs no longer listed are dropped); a cache that
        cannot be written costs the next run a rescan, nothing else."""
        if self.fresh == self.entries:
            return
        try:
            write_json(self.path, self.fresh)
        except OSError as exc:
            log.debug("segment: the scan cache %s was not written (%s)", self.path, exc)


def _check_pair(image: Path, label_path: Path, read_label: Callable[[Path], np.ndarray],
                image_shape: Callable[[Path], tuple[int, ...]], rules: SegmentRules,
                check: Callable[[Path, Path], None] | None) -> list:
    """``["ok", largest id]``, or ``["refused", kind, reason]``."""
    try:
        if check is not None:
            check(image, label_path)
        label = mapped(read_label(label_path), rules)
        shape = tuple(image_shape(image))
        if tuple(label.shape) != shape:
            raise UnreadableSample(f"annotation {'x'.join(map(str, label.shape))}, image "
                                   f"{'x'.join(map(str, shape))}",
                                   "annotation of another size than its image")
    except LOAD_ERRORS as exc:
        return ["refused", getattr(exc, "kind", None) or "unreadable", str(exc)]
    return ["ok", _largest_id(label, rules.ignore_index)]


def scan(pairs: Sequence[tuple[Path, Path]], read_label: Callable[[Path], np.ndarray],
         image_shape: Callable[[Path], tuple[int, ...]], rules: SegmentRules,
         names: Sequence[str] | None, where: str,
         check: Callable[[Path, Path], None] | None = None, key: str = "") -> Scanned:
    """Read every annotation once; pairs that fail a check are left out and counted by kind
    (one line each, naming the first). ``read_label`` raises ``UnreadableSample`` for an
    annotation that cannot hold class ids (an RGB picture); ``image_shape`` is the image's
    spatial shape from its header; ``check(image, annotation)`` a modality's own test of the
    pair (volumes: the spacings); ``key`` names the settings those depend on (the scan cache's
    entries are kept apart by it)."""
    cache = ScanCache(pairs, rules, key)
    kept, largest, refused = [], [], {}
    for image, label_path in pairs:
        stamp, outcome = cache.get(image, label_path)
        if outcome is None:
            outcome = _check_pair(image, label_path, read_label, image_shape, rules, check)
            cache.put(image, label_path, stamp, outcome)
        if outcome[0] == "refused":
            refused.setdefault(outcome[1], []).append(f"{label_path}: {outcome[2]}")
            continue
        kept.append((image, label_path))
        largest.append(outcome[1])
    cache.save()
    if cache.hits:
        log.info("%s: %s of %d checked as in an earlier run (unchanged since; %s)", where,
                 plural(cache.hits, "pair"), len(pairs), cache.path)
    count = rules.num_classes or (len(names) if names else max(largest, default=0) + 1)
    kept_ids = []
    for pair, top in zip(kept, largest):
        if top >= count:
            refused.setdefault(f"class id at or above {count} (segment.num_classes)", []).append(
                f"{pair[1]}: id {top}")
        else:
            kept_ids.append(pair)
    for kind, items in refused.items():
        log.warning("%s: %s skipped, %s (first: %s)", where, plural(len(items), "pair"), kind,
                    items[0])
    return Scanned(kept_ids, count)


# -- training views -----------------------------------------------------------------------------
def _mode(rank: int) -> str:
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]


def rescale(x: torch.Tensor, label: torch.Tensor, factor: float) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """x [C, *lead, *s] (linear, per leading index: a time stack's dates) and label [*s]
    (nearest) to round(s * factor)."""
    size = [max(1, round(s * factor)) for s in label.shape]
    if list(label.shape) == size:
        return x, label
    rank = label.dim()
    lead = x.shape[:-rank]
    flat = x.reshape(1, -1, *x.shape[-rank:])  # [1, C * prod(lead), *s]
    flat = F.interpolate(flat, size=size, mode=_mode(rank), align_corners=False)
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return flat.reshape(*lead, *size), label.long()  # [C, *lead, *size], [*size]


def pad_to(x: torch.Tensor, label: torch.Tensor, size: Sequence[int],
           ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the ends of every spatial axis (the last ones of x) up to ``size``: x with 0, label
    with ``ignore``."""
    extra = [max(0, want - have) for want, have in zip(size, label.shape)]
    if not any(extra):
        return x, label
    pads = [v for e in reversed(extra) for v in (0, e)]  # F.pad: last axis first
    return F.pad(x, pads, value=0.0), F.pad(label, pads, value=ignore)


def crop_start(label: torch.Tensor, size: Sequence[int], rng: random.Random,
               foreground: float, ignore: int) -> list[int]:
    """A crop's first index per axis: uniform, or (with probability ``foreground``) centred
    on a labelled pixel, a random one of those not 0 and not ignore."""
    room = [have - want for have, want in zip(label.shape, size)]
    if foreground and rng.random() < foreground:
        hits = ((label != 0) & (label != ignore)).nonzero()  # [n, rank]
        if len(hits):
            centre = hits[rng.randrange(len(hits))].tolist()
            return [min(max(c - s // 2, 0), r) for c, s, r in zip(centre, size, room)]
    return [rng.randint(0, r) for r in room]


def training_view(x: torch.Tensor, label: torch.Tensor, size: Sequence[int], seed: int,
                  data_scale: tuple[float, float], flips: Sequence[float], foreground: float,
                  ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale, crop (pad first where smaller) and flip x [C, *lead, *s] and label [*s] alike
    -> ([C, *lead, *size], [*size])."""
    rng = random.Random(seed)
    x, label = rescale(x, label, rng.uniform(*data_scale))
    x, label = pad_to(x, label, size, ignore)
    start = crop_start(label, size, rng, foreground, ignore)
    box = tuple(slice(a, a + s) for a, s in zip(start, size))
    x, label = x[(..., *box)], label[box]
    axes = [i for i, p in enumerate(flips) if p and rng.random() < p]
    if axes:
        rank = label.dim()
        x, label = x.flip([a - rank for a in axes]), label.flip(axes)
    return x.contiguous(), label.contiguous()


class SegmentItems(MimDataset):
    """Image / annotation pairs as ``Sample(x [C, *lead, *s], label [*s])`` (``lead``: a time
    stack's dates, or nothing): whole (``size`` None) or training crops of ``size``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]],
                 read: Callable[[Path, Path], tuple[torch.Tensor, np.ndarray]],
                 rules: SegmentRules, size: Sequence[int] | None = None,
                 scale: tuple[float, float] = (1.0, 1.0), flips: Sequence[float] = (),
                 foreground: float = 0.0, nodata: bool = False):
        self.pairs, self.read, self.rules = list(pairs), read, rules
        self.size = list(size) if size is not None else None
        self.scale, self.flips, self.foreground = scale, tuple(flips), foreground
        self.nodata = nodata

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])

    def cropped(self, size: Sequence[int], scale: tuple[float, float], flips: Sequence[float],
                foreground: float) -> "SegmentItems":
        """The same pairs as training crops."""
        return SegmentItems(self.pairs, self.read, self.rules, size, scale, flips, foreground,
                            self.nodata)

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, raw = self.read(*self.pairs[index])  # [C, *lead, *s] float, [*s]
        label = torch.from_numpy(mapped(raw, self.rules))  # [*s] int64
        ignore = self.rules.ignore_index
        if self.size is not None:
            x, label = training_view(x, label, self.size, seed, self.scale, self.flips,
                                     self.foreground, ignore)
        if self.nodata:  # a pixel without data in any band (or date) is not scored
            missing = torch.isnan(x).reshape(-1, *label.shape).any(dim=0)  # [*s]
            label = label.masked_fill(missing, ignore)
        return x, label
