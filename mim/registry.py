"""Flat, named registries for every pluggable kind, filled by decorators.

One ``Registry`` per kind (tokenizer, mask, model, modality, backend, launcher, tracker), and the extra
Hydra config folders plugins ship (``add_config_dir``). Registering a name twice is an error, and
every "unknown name" error lists the valid names. A leaf: it imports nothing from mim, so any
module may register here. Filling the registries is ``mim.plugins``' job: it installs a lookup
hook (``set_lookup_hook``) so that the first lookup imports the built-ins and every entry point.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    source: str  # distribution (or module) that registered it


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, *, obj: Any = None) -> Callable:
        """Decorator (``@REG.register("name")``) or direct call (``REG.register("n", obj=x)``)."""

        def add(target: Any) -> Any:
            key = name or getattr(target, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind}: a name is required to register {target!r}")
            if key in self._entries:
                prev = self._entries[key]
                raise ValueError(
                    f"{self.kind} '{key}' is already registered (by {prev.source}); "
                    "choose another name"
                )
            self._entries[key] = Entry(key, target, _current_source(target))
            return target

        return add(obj) if obj is not None else add

    def get(self, name: str) -> Any:
        _lookup()
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid: {', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        _lookup()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        _lookup()
        for key in sorted(self._entries):
            yield self._entries[key]

    def __contains__(self, name: str) -> bool:
        _lookup()
        return name in self._entries


TOKENIZERS = Registry("tokenizer")
MASKS = Registry("mask policy")
MODELS = Registry("model")
MODALITIES = Registry("modality")
BACKENDS = Registry("backend")
LAUNCHERS = Registry("launcher")
TRACKERS = Registry("tracker")
ALL = {"tokenizer": TOKENIZERS, "mask": MASKS, "model": MODELS,
       "modality": MODALITIES, "backend": BACKENDS, "launcher": LAUNCHERS,
       "tracker": TRACKERS}

# Set by mim.plugins: run before every lookup so that the first one loads the plugins.
_before_lookup: Callable[[], Any] | None = None
# Set by mim.plugins while it imports an entry point: the distribution its entries come from.
_loading_source: str | None = None


def set_lookup_hook(hook: Callable[[], Any] | None) -> None:
    """Run ``hook`` before every lookup (``get``, ``names``, ``entries``, ``in``)."""
    global _before_lookup
    _before_lookup = hook


@contextmanager
def registering_as(source: str) -> Iterator[None]:
    """Entries registered inside the block are attributed to ``source`` (in ``mim plugins``)."""
    global _loading_source
    _loading_source = source
    try:
        yield
    finally:
        _loading_source = None


def _lookup() -> None:
    if _before_lookup is not None:
        _before_lookup()


def _current_source(target: Any) -> str:
    if _loading_source is not None:
        return _loading_source
    module = inspect.getmodule(target)
    name = module.__name__ if module else "?"
    return "mim (built-in)" if name.split(".")[0] == "mim" else name


CONFIG_DIRS: list[str] = []


def add_config_dir(path: str) -> None:
    """Let a plugin ship Hydra config files: ``path`` joins the config search path."""
    if path not in CONFIG_DIRS:
        CONFIG_DIRS.append(path)
