"""One ``key=value`` grammar for every ``mim`` command: Hydra's.

``mim train`` composes its config with Hydra (``config/compose.py``). The commands that build
their config from parts (``mim eval``, ``mim visualize``, ``mim convert``) hold it in one
OmegaConf tree and apply the command line to it with the function ``hydra.compose`` itself
applies overrides with, so quoting, lists, ``null``, ``+key=``, ``++key=``, ``~key`` and
``${...}`` interpolation mean the same everywhere, and ``group=NAME`` chooses an option of a
config group (``model=``, ``modality=``, ``mask=``). Every problem, from either path, is a
one-line ``ConfigError`` worded here: the key, then the valid keys or values.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable

# the override application of hydra.compose (a private helper, pinned by hydra-core<1.4): the
# same function for every command is what makes an override mean the same everywhere
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mim.config.errors import ConfigError


# sections inside a group option whose keys follow the plugin their ``name`` chooses (not a
# config group: a new choice's keys are added with ``+``)
CHOSEN_SECTIONS = ("model.tokenizer",)


def unknown_key(path: str, valid: Iterable[str]) -> str:
    parent = path.rpartition(".")[0]
    text = (f"{path}: unknown key; valid keys{' in ' + parent if parent else ''}: "
            f"{', '.join(sorted(set(valid)))}")
    if parent in CHOSEN_SECTIONS:
        text += (f" (the keys of the {parent} chosen; for another's, choose it and add its "
                 f"keys: {parent}.name=NAME +{path}=VALUE)")
    return text


def unknown_option(group: str, choice: Any, valid: Iterable[str]) -> str:
    return f"{group}: unknown option '{choice}'; valid: {', '.join(sorted(valid))}"


def check_syntax(overrides: Iterable[str]) -> None:
    """Each override in Hydra's grammar, or a ConfigError naming the first bad one (with the
    quoting to use when an unquoted value holds spaces or non-ASCII letters, e.g. a path)."""
    parser = OverridesParser.create()
    previous = ""
    for text in overrides:  # one at a time, so that an error names its override
        if text.startswith("-"):  # a flag Hydra's own command line takes (--info, -cn, ...)
            raise ConfigError(f"{text}: {_NOT_AN_OPTION}")
        try:
            parser.parse_override(text)
        except HydraException as exc:
            detail = " ".join(str(exc).split())
            key, _, value = text.partition("=")
            if "missing EQUAL" in detail:
                detail = "expected key=value (or ~key to delete it)"
                if "=" in previous:  # the shell split an unquoted value at a space
                    key, _, value = f"{previous} {text}".partition("=")
                    detail += f"; if it continues {previous!r}, {_QUOTE}: '{key}=\"{value}\"'"
                    key = text
            else:  # Hydra's first line repeats the override; the second says what is wrong
                lines = [line for line in str(exc).splitlines() if line.strip()]
                detail = " ".join((lines[1] if len(lines) > 1 else lines[0]).split())
                if value and value[0] not in "'\"" and not value.isascii():
                    detail += f"; {_QUOTE}: '{key}=\"{value}\"'"
            raise ConfigError(f"{key}: {detail}") from None
        previous = text


_NOT_AN_OPTION = ("not an option; mim commands take key=value overrides (mim train also -m for "
                  "a sweep and --cfg [job|all] to print the config; --help lists the keys); "
                  "Hydra's --info, --resolve, --package, --config-path and --config-name do "
                  "not apply: mim composes its own config")
_QUOTE = ("a value with spaces or non-ASCII letters (a path) must be quoted for Hydra, inside "
          "the shell's quotes")


def parse(overrides: list[str], groups: Iterable[str] = ()) -> tuple[dict[str, str],
                                                                      list[Override]]:
    """(the ``group=NAME`` choices among ``groups``, the other overrides), in Hydra's grammar.
    ``groups``: config groups that always have an option, so they cannot be deleted (``~model``)
    or added (``+model=``); a dict (``model={depth:2}``) is merged into the section. A sweep
    (``a=1,2``) is for ``mim train -m`` only, which expands it before this is called."""
    check_syntax(overrides)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    check_once(parsed)
    choices: dict[str, str] = {}
    rest = []
    for item in parsed:
        key = item.key_or_group
        if item.is_sweep_override():
            raise ConfigError(f"{key}: one value expected; a sweep ({item.input_line}) needs "
                              "mim train -m")
        if key in groups and item.is_delete():
            raise ConfigError(f"{key}: required; it cannot be deleted")
        if key in groups and not isinstance(item.value(), dict):
            if item.type.name != "CHANGE" or not isinstance(item.value(), str):
                raise ConfigError(f"{key}: a config group; choose an option with {key}=NAME")
            choices[key] = item.value()
        else:
            rest.append(item)
    return choices, rest


def check_once(parsed: list[Override]) -> None:
    """Each key at most once: the last of several would win without a word, and the usual
    cause is the shell expanding an unquoted brace pattern into one argument per value."""
    seen: dict[str, list[Override]] = {}
    for item in parsed:
        # ~key deletes and key={...} merges into a section (model=NAME model={depth:2}): not
        # a second value
        if not item.is_delete() and not isinstance(item.value(), dict):
            seen.setdefault(item.key_or_group, []).append(item)
    for key, items in seen.items():
        if len(items) < 2:
            continue
        lines = [item.input_line for item in items]
        shown = ", ".join(lines[:3]) + (f" and {len(lines) - 3} more" if len(lines) > 3 else "")
        paths = all("/" in str(item.value()) for item in items)  # what a brace pattern names
        raise ConfigError(f"{key}: given {len(lines)} times ({shown}); give it once" + (
            "; a brace pattern must be quoted, \"" + key + "='/data/shard-{000..003}.tar'\", "
            "or the shell expands it into one argument per value" if paths else ""))


def message(exc: Exception, valid_keys: Callable[[str], list[str]],
            overrides: Iterable[Override] = ()) -> str:
    """One line for a Hydra or OmegaConf failure to apply ``overrides`` or compose a config;
    ``valid_keys(parent)``: the keys under ``parent`` ("" for the root)."""
    texts = [str(exc)] + ([str(exc.__cause__)] if exc.__cause__ else [])
    joined = "\n".join(texts)
    key = re.search(r"full_key: ([\w.\[\]]+)", joined)
    bad = (re.search(r"Could not (?:override|delete from config\.) '([\w.]+)'", joined)
           or re.search(r"An item is already at '([\w.]+)'", joined)
           or re.search(r"Error merging override [+~]*([\w.]+)", joined))
    path = (key or bad).group(1) if (key or bad) else None
    if path is None:  # e.g. a list indexed by a name (a.b.x=1, b a list) names only 'x'
        path = next((o.key_or_group for o in overrides for part in o.key_or_group.split(".")
                     if f"'{part}'" in joined), None)
    # "is not in struct" for plain dict nodes, "Key 'x' not in 'SomeConfig'" for typed ones,
    # "does not exist" for a deletion
    unknown = ("not in struct" in joined or re.search(r"Key '[^']*' not in '", joined)
               or "does not exist" in joined)
    if unknown and path:
        parent, _, leaf = path.rpartition(".")
        if "does not exist" in joined and leaf in valid_keys(parent):  # ~key of a null key
            return f"{path}: not set (null), so there is nothing to delete"
        return unknown_key(path, valid_keys(parent))
    detail = next((line for t in reversed(texts) for line in t.splitlines()
                   if line.strip() and "full_key" not in line and "object_type" not in line
                   and "reference_type" not in line), joined)
    return f"{path}: {detail.strip()}" if path else " ".join(joined.split())


def keys_of(tree: DictConfig, extra: Iterable[str] = ()) -> Callable[[str], list[str]]:
    """The ``valid_keys`` lister of ``message`` for ``tree`` (``extra``: more root keys, such as
    the config groups)."""
    def valid(parent: str) -> list[str]:
        node = OmegaConf.select(tree, parent) if parent else tree
        names = list(node.keys()) if isinstance(node, DictConfig) else []
        return sorted({*map(str, names), *(extra if not parent else ())})
    return valid


def apply(tree: dict[str, Any], overrides: list[Override], groups: Iterable[str] = (),
          open_keys: Iterable[str] = ()) -> DictConfig:
    """``tree`` (plain values, dicts and dataclasses; ``open_keys`` take any key) as a struct
    DictConfig with ``overrides`` applied as ``hydra.compose`` applies them."""
    node = OmegaConf.create({k: OmegaConf.structured(v) if dataclasses.is_dataclass(v) else v
                             for k, v in tree.items()})
    OmegaConf.set_struct(node, True)
    for key in open_keys:
        OmegaConf.set_struct(node[key], False)
    valid = keys_of(node, groups)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(overrides, node)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(message(exc, valid, overrides)) from None
    check_keys(node.keys(), tree, groups)
    return node


def check_keys(keys: Iterable[str], expected: Iterable[str], groups: Iterable[str] = ()) -> None:
    """The top-level keys after the overrides are the expected ones: ``+key=`` added one that
    no command reads, ``~key`` deleted one that it needs."""
    keys, expected = set(keys), set(expected)
    if keys - expected:
        raise ConfigError(unknown_key(sorted(keys - expected)[0], [*expected, *groups]))
    if expected - keys:
        raise ConfigError(f"{sorted(expected - keys)[0]}: required; it cannot be deleted")


def without(overrides: list[Override], section: str) -> list[Override]:
    """``overrides`` less those of ``section`` (a dotted path: its keys and the section
    itself)."""
    return [o for o in overrides
            if o.key_or_group != section and not o.key_or_group.startswith(f"{section}.")]


def plain(node: Any, key: str) -> Any:
    """``node`` as Python values, interpolations resolved (against the whole tree)."""
    try:
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except OmegaConfBaseException as exc:
        full = getattr(exc, "full_key", "") or key
        raise ConfigError(f"{full}: {str(exc).splitlines()[0]}") from None


def typed(schema: Any, node: Any, section: str) -> Any:
    """The dataclass ``schema`` (a class, or an instance as the base) with ``node`` (a dict)
    merged in, type-checked and built (which runs its checks)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        text = str(exc)
        if "not in struct" in text or re.search(r"Key '[^']*' not in '", text):
            return _raise(unknown_key(f"{section}.{key}",
                                      [f.name for f in dataclasses.fields(schema)]))
        first = text.splitlines()[0]
        return _raise(f"{section}.{key}: {first}" if key else f"{section}: {first}")
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0]
        return _raise(text if text.startswith(section) else f"{section}: {text}")


def _raise(text: str) -> Any:
    raise ConfigError(text)


def integer(key: str, value: Any, minimum: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or (
            minimum is not None and value < minimum):
        at_least = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{key}: must be an integer{at_least}, got {value!r}")
    return value
