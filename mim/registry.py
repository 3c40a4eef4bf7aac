"""Flat, named registries for every pluggable kind, filled by decorators.

One ``Registry`` per kind (tokenizer, mask, model, modality, backend, launcher). Registering a name
twice is an error, and every "unknown name" error lists the valid names. Third-party packages add
entries through the entry-point group ``mim.plugins``: each entry point names a module (or a
callable) that registers on import; ``load_plugins()`` imports them all once, remembering which
distribution every entry came from so ``mim plugins`` can say so.
"""
from __future__ import annotations

import importlib.metadata as md
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

ENTRY_POINT_GROUP = "mim.plugins"


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
        load_plugins()
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid: {', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        load_plugins()
        for key in sorted(self._entries):
            yield self._entries[key]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries


TOKENIZERS = Registry("tokenizer")
MASKS = Registry("mask policy")
MODELS = Registry("model")
MODALITIES = Registry("modality")
BACKENDS = Registry("backend")
LAUNCHERS = Registry("launcher")
ALL = {"tokenizer": TOKENIZERS, "mask": MASKS, "model": MODELS,
       "modality": MODALITIES, "backend": BACKENDS, "launcher": LAUNCHERS}

_loaded = False
_loading_source: str | None = None
_plugin_errors: list[str] = []


def _current_source(target: Any) -> str:
    if _loading_source is not None:
        return _loading_source
    module = inspect.getmodule(target)
    name = module.__name__ if module else "?"
    return "mim (built-in)" if name.split(".")[0] == "mim" else name


def load_plugins() -> list[str]:
    """Import every ``mim.plugins`` entry point once; return the errors of broken plugins."""
    global _loaded, _loading_source
    if _loaded:
        return _plugin_errors
    _loaded = True
    import mim.builtins  # noqa: F401  (core tokenizers, masks, models, backends)

    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        _loading_source = "mim (built-in)" if dist == "mim-pretrain" else f"{dist} (plugin)"
        try:
            loaded = ep.load()
            if callable(loaded) and not inspect.ismodule(loaded):
                loaded()
        except Exception as exc:  # a broken plugin must not break mim; report it
            _plugin_errors.append(f"plugin '{ep.name}' from {dist} failed to load: {exc}")
        finally:
            _loading_source = None
    return _plugin_errors


CONFIG_DIRS: list[str] = []


def add_config_dir(path: str) -> None:
    """Let a plugin ship Hydra config files: ``path`` joins the config search path."""
    if path not in CONFIG_DIRS:
        CONFIG_DIRS.append(path)
