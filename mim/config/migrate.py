"""Config trees an earlier mim wrote, read with today's keys: the one home of every renamed key.

A run's ``config.yaml``, a checkpoint's config and an export's model section keep the keys of
the mim that wrote them. Every reader of a stored tree passes it through ``current`` (a whole
run config) or ``current_model`` (its ``model`` section) first, so that a resume compares like
with like and an earlier run still evaluates, converts and continues. CHANGELOG.md lists the
renames.

- ``model.tokenizer: NAME`` and the ``model.hybrid_<key>`` settings became one section,
  ``model.tokenizer: {name: NAME, <key>: ...}``: the tokenizer's own parameters (its
  ``Config``). Only the hybrid tokenizers read the ``hybrid_*`` values, so other tokenizers'
  copies, never used, are dropped.
"""
from __future__ import annotations

import copy
from typing import Any

HYBRID_PREFIX = "hybrid_"
HYBRID_NAMES = ("hybrid2d", "hybrid3d")  # the tokenizers that read hybrid_* before the rename


def current_model(model: dict[str, Any]) -> dict[str, Any]:
    """A ``model`` section with today's keys (a copy; one already current comes back equal)."""
    out = copy.deepcopy(dict(model))
    old = {k[len(HYBRID_PREFIX):]: out.pop(k) for k in list(out) if k.startswith(HYBRID_PREFIX)}
    name = out.get("tokenizer")
    if isinstance(name, str):
        out["tokenizer"] = {"name": name, **(old if name in HYBRID_NAMES else {})}
    return out


def current(tree: dict[str, Any] | None) -> dict[str, Any] | None:
    """A whole run config with today's keys (None stays None: a checkpoint without one)."""
    if not isinstance(tree, dict) or not isinstance(tree.get("model"), dict):
        return tree
    return {**tree, "model": current_model(tree["model"])}
