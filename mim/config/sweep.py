"""Hydra-style multirun: ``mim train -m optim.blr=1e-4,3e-4 seed=0,1`` -> one config per point.

Overrides are parsed with Hydra's own override grammar, so its sweep syntax (``a=1,2``,
``a=range(0,3)``, ``a=choice(x,y)``) means what it means in Hydra; the sweep is the cartesian
product, in command-line order. Points that would share one ``run.dir`` get a subdirectory
each (``own_run_dirs``).
"""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from mim.config.errors import ConfigError
from mim.config.overrides import check_syntax


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The override lists of every point of the sweep (one list when nothing sweeps)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        check_syntax(overrides)  # names the bad override (and the quoting it needs)
        raise ConfigError(" ".join(str(exc).split())) from None
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]


def point_names(points: list[list[str]]) -> list[str]:
    """A name per point: its swept ``key=value`` overrides joined by commas (a path segment:
    ``/`` and quotes replaced)."""
    swept = [i for i in range(len(points[0])) if len({p[i] for p in points}) > 1
             and not points[0][i].startswith("run.dir=")]  # the folder the name goes into
    names = [",".join(p[i] for i in swept) for p in points]
    return [name.replace("/", "_").replace("'", "").replace('"', "") or str(n)
            for n, name in enumerate(names)]


def own_run_dirs(points: list[list[str]], specs: list[Any],
                 load: Callable[[list[str]], Any]) -> list[Any]:
    """Points of a sweep that share one ``run.dir`` each get ``<run.dir>/<point name>``: the
    run of one point never resumes another's. The subdirectory is added as an override, so a
    launcher that re-runs the command line (a Slurm job array) writes there too."""
    shared = Counter(spec.run.dir for spec in specs)
    out = []
    for point, spec, name in zip(points, specs, point_names(points)):
        if spec.run.dir and shared[spec.run.dir] > 1:
            path = str(Path(spec.run.dir) / name).replace("\\", "\\\\").replace("'", "\\'")
            kept = [o for o in point if o.split("=", 1)[0].lstrip("+") != "run.dir"]
            spec = load([*kept, f"run.dir='{path}'"])
        out.append(spec)
    return out
