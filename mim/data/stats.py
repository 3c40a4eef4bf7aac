"""``mim data stats``: the per-band statistics of a dataset, printed, and written with ``out=``.

The same numbers ``data.mean=auto data.std=auto`` gives a run (the modality's ``stats``, image:
``modalities/image/bands.py``), here over every file unless ``data.stats_files`` says fewer:
per band its name, mean, std, min, max and share of no data, in the file's units divided by
``data.scale``. Nothing is written into the data's folder.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mim.config.errors import ConfigError

USAGE = "mim data stats data.root=DIR [modality=image] [data.bands=[...]] [out=FILE.json]"
ALL_FILES = 10 ** 9  # data.stats_files unless given: every file
RESOLVE_FILES = 16  # files the resolution's own (unused) statistics read


def sample_indices(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``count`` items (all of them if fewer): the files
    ``data.mean / data.std = auto`` read, in every modality."""
    if wanted >= count:
        return list(range(count))
    return sorted({int(i * count / wanted) for i in range(wanted)})


def _table(stats: dict) -> str:
    rows = [f"{'band':>10} {'mean':>12} {'std':>12} {'min':>12} {'max':>12} {'nodata':>7}"]
    for i, name in enumerate(stats["names"]):
        rows.append(f"{name:>10} {stats['mean'][i]:12.6g} {stats['std'][i]:12.6g} "
                    f"{stats['min'][i]:12.6g} {stats['max'][i]:12.6g} "
                    f"{stats['nodata_fraction'][i]:7.2%}")
    rows.append(f"{stats['files']} of {stats['of']} files read"
                + (f"; {len(stats['skipped'])} unreadable" if stats["skipped"] else ""))
    return "\n".join(rows)


def stats_command(args: list[str]) -> str:
    """``mim data stats key=value ...`` -> the table (and ``out=``'s file)."""
    from mim.config.compose import resolved_data
    from mim.config.overrides import apply, parse, plain, typed, without
    from mim.plugins import load_plugins
    from mim.registry import MODALITIES, UnknownNameError

    load_plugins()
    overrides = parse(args)[1]
    first = plain(apply({"modality": "image", "out": None}, without(overrides, "data")), "")
    try:
        modality = MODALITIES.get(first["modality"])
    except UnknownNameError as exc:
        raise ConfigError(f"modality: {exc}") from None
    if modality.stats is None:
        raise ConfigError(f"modality: {modality.name} has no band statistics ({USAGE})")
    tree = {**first, "data": {**dataclasses.asdict(modality.data_config()),
                              "stats_files": ALL_FILES}}
    c = plain(apply(tree, overrides), "")
    if not c["data"].get("root"):
        raise ConfigError(f"data.root: required ({USAGE})")
    # resolved on a few files (their statistics unused), then the statistics of all asked for
    data = typed(modality.data_config, {**c["data"], "stats_files": RESOLVE_FILES,
                                        "mean": "auto", "std": "auto"}, "data")
    resolved = resolved_data(modality.resolve_data, data, None)
    stats = modality.stats(dataclasses.replace(resolved,
                                               stats_files=c["data"]["stats_files"]))
    if c["out"]:
        Path(c["out"]).expanduser().write_text(json.dumps(stats, indent=2) + "\n")
    return _table(stats)
