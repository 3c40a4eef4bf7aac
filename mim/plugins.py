"""Fills the registries: the core's own registrations, then every ``mim.plugins`` entry point.

Two ways in, on purpose. The core's tokenizers, masks and backends (``mim.builtins``) are imported
directly: they are mim itself, needed even where the entry-point metadata is stale, and a
broken one must raise rather than be reported. The built-in modalities and launchers come through
the entry-point group exactly as a third-party package's do (pyproject.toml lists them), because
the core never imports them. Each entry point names a module (or a callable) that registers on
import; its entries are attributed to its distribution so that ``mim plugins`` can say so.

Importing this module (``import mim`` does) installs ``load_plugins`` as the registries' lookup
hook, so the first ``get``/``names``/``entries``/``in`` on any registry loads everything once.
"""
from __future__ import annotations

import importlib.metadata as md
import inspect

from mim import registry

ENTRY_POINT_GROUP = "mim.plugins"
BUILTIN_DIST = "mim-pretrain"  # entry points of this distribution are mim's own

_loaded = False
_errors: list[str] = []


def load_plugins() -> list[str]:
    """Import the built-ins and every ``mim.plugins`` entry point once; return the errors of
    plugins that failed to load (a broken plugin must not break mim)."""
    global _loaded
    if _loaded:
        return _errors
    _loaded = True
    import mim.builtins  # noqa: F401  (a failure here is a bug of mim: it raises)
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        source = "mim (built-in)" if dist == BUILTIN_DIST else f"{dist} (plugin)"
        try:
            with registry.registering_as(source):
                loaded = ep.load()
                if callable(loaded) and not inspect.ismodule(loaded):
                    loaded()
        except Exception as exc:
            _errors.append(f"plugin '{ep.name}' from {dist} failed to load: {exc}")
    return _errors


registry.set_lookup_hook(load_plugins)
