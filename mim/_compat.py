"""Import-time fixes for the torch / torchvision combinations users really have.

torchvision wheels built for another torch (for example the CUDA torchvision next to a CPU torch)
fail at import with ``RuntimeError: operator torchvision::nms does not exist``: torchvision
registers fake kernels for ``nms``/``qnms`` without checking that its C++ ops loaded. timm imports
torchvision, so without this nothing that uses timm imports. We first try to load torchvision's
own ops; only if that fails do we declare the two schemas so the fake-kernel registration
succeeds. ``torchvision.ops`` and ``torchvision.io`` stay unusable then, and mim never calls them.
Where the ops load (a matching install) this is a no-op.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the fragment alive for the life of the process


def _ops_registered() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 (attribute lookup is the check)
        return True
    except (AttributeError, RuntimeError):
        return False


def patch_torchvision() -> None:
    global _library
    if "torchvision" in sys.modules or _ops_registered():
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        so = os.path.join(folder, "_C.so")
        if os.path.exists(so):
            try:
                torch.ops.load_library(so)
            except (OSError, RuntimeError):
                pass
    if _ops_registered():
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)


patch_torchvision()
