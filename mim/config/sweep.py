"""Hydra-style multirun: ``mim train -m optim.blr=1e-4,3e-4 seed=0,1`` -> one config per point.

Overrides are parsed with Hydra's own override grammar, so its sweep syntax (``a=1,2``,
``a=range(0,3)``, ``a=choice(x,y)``) means what it means in Hydra; the sweep is the cartesian
product, in command-line order.
"""
from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from mim.config.errors import ConfigError


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The override lists of every point of the sweep (one list when nothing sweeps)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]
