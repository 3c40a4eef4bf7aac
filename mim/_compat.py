"""Import-time fixes for the torch / torchvision combinations users really have.

torchvision wheels built for another torch (for example the CUDA torchvision next to a CPU torch)
fail at import with ``RuntimeError: operator torchvision::nms does not exist``: torchvision
registers fake kernels for ``nms``/``qnms`` without checking that its C++ ops loaded. timm imports
torchvision, so without this nothing that uses timm imports. We first try to load torchvision's
own ops; only if that fails do we declare the two schemas so the fake-kernel registration
succeeds. ``torchvision.ops`` and ``torchvision.io`` stay unusable then, and mim never calls them.
Where the ops load (a matching install) this is a no-op.

``import mim`` applies the fix first thing. For code that imports timm or torchvision without
mim, ``install.sh`` adds a ``.pth`` startup line to an environment where the builds do not match
(see ``pth_line``): it loads this file by its path (the ``mim`` package itself is too heavy to
import at every interpreter start) and calls ``fix_on_first_import``, which waits for the first
``import torchvision``. This module imports only the standard library at its top for that reason.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _ops_registered() -> bool:
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 (attribute lookup is the check)
        return True
    except (AttributeError, RuntimeError):
        return False


def patch_torchvision() -> None:
    """Make torchvision importable next to this torch; call before its first import."""
    if "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations or _ops_registered():
        return
    import torch

    for folder in spec.submodule_search_locations:
        so = os.path.join(folder, "_C.so")
        if os.path.exists(so):
            try:
                torch.ops.load_library(so)
            except (OSError, RuntimeError):
                pass
    if _ops_registered():
        return
    for op in ("nms", "qnms"):
        # without lib=, torch keeps the definition for the life of the process
        torch.library.define(f"torchvision::{op}", _SCHEMA)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs ``patch_torchvision`` when torchvision is first imported, then steps aside (returns
    no spec, so the ordinary finders load torchvision)."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        if name == "torchvision":
            sys.meta_path.remove(self)  # before the fix, which looks torchvision up itself
            patch_torchvision()
        return None


def fix_on_first_import() -> None:
    """Apply ``patch_torchvision`` lazily, at the first ``import torchvision`` of the process
    (no torch import at interpreter start)."""
    # by name: a .pth file seen twice (a venv's lib64 -> lib link) loads this file twice
    if "torchvision" not in sys.modules and not any(
            type(f).__name__ == "_BeforeTorchvision" for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def pth_line() -> str:
    """The line ``install.sh`` writes into a ``.pth`` file of an environment whose torchvision
    does not match its torch: this file loaded by path, ``fix_on_first_import`` called."""
    return ("import importlib.util as u; s = u.spec_from_file_location('_mim_compat', "
            f"{os.path.abspath(__file__)!r}); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); m.fix_on_first_import()")
