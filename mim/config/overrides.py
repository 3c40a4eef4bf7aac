"""``key=value`` overrides for commands that build their config from parts (``mim eval``,
``mim visualize``, ``mim convert``): Hydra's own override grammar, checked against dataclasses.

The values are parsed exactly as ``mim train`` parses them (lists ``[1,2]``, ``null``, quoted
strings), then applied to typed sections; every problem is a one-line ``ConfigError`` naming the
key and what is valid, raised before anything is computed.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mim.config.errors import ConfigError


def parse(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[2,3]"]`` -> ``{"a.b": 1, "c": [2, 3]}`` (no sweeps, no +/~ forms)."""
    for text in overrides:
        if "=" not in text:
            raise ConfigError(f"'{text}': expected key=value")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    values: dict[str, Any] = {}
    for item in parsed:
        key = item.key_or_group
        if item.is_sweep_override():
            raise ConfigError(f"{key}: one value expected (sweeps are for mim train -m)")
        if item.type.name != "CHANGE":
            raise ConfigError(f"{key}: write {key}=value (no +, ++ or ~ prefixes here)")
        values[key] = item.value()
    return values


def take(values: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Remove and return the entries of ``values`` that are ``keys`` or under ``key.``."""
    out = {}
    for key in list(values):
        if any(key == k or key.startswith(f"{k}.") for k in keys):
            out[key] = values.pop(key)
    return out


def build(schema: type, base: Any, values: dict[str, Any], section: str) -> Any:
    """``base`` (an instance of the dataclass ``schema``, or None for its defaults) with the
    ``section.field=value`` entries of ``values`` applied, type-checked and validated."""
    fields = [f.name for f in dataclasses.fields(schema)]
    node = OmegaConf.structured(base if base is not None else schema)
    for key, value in values.items():
        name = key[len(section) + 1:]
        if name.split(".")[0] not in fields:
            raise ConfigError(f"{key}: unknown key; valid keys in {section}: {', '.join(fields)}")
        try:
            OmegaConf.update(node, name, value, merge=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{section}: {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError) as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(section) else f"{section}: {text}") from None


def unknown(values: dict[str, Any], valid: list[str]) -> None:
    """Any entry left in ``values`` is not a key of this command."""
    if values:
        key = sorted(values)[0]
        raise ConfigError(f"{key}: unknown key; valid: {', '.join(valid)}")
