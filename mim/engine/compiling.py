"""``train.compile``: how much of the model ``torch.compile`` sees.

- ``none``: eager PyTorch.
- ``blocks`` (``true``): regional compilation. Every transformer block, and every conv block of
  a hybrid tokenizer's stages, is compiled on its own (``nn.Module.compile``, in place). The
  blocks of a stack are identical modules, so they share one compiled graph, and the first step
  compiles in a fraction of the whole model's time (ViT-B MAE on a Zen 3 core: 38 s against
  114 s; bench/RESULTS.md). The masking gathers, the loss and everything between the blocks
  stay eager.
- ``model``: the whole forward as one graph (``torch.compile(model)``); the longest compile,
  room for fusions across block boundaries.

Graphs are static (``dynamic=False``): a new input size (``data.resolution_schedule``) compiles
once more when its stage begins, one graph per size, within torch's recompile limit (8 per code
object) for any schedule of a few sizes; static shapes keep each size's kernels specialised.

State-dict keys are unchanged in every mode: ``nn.Module.compile`` wraps a module's call
without renaming anything, and the backends save the bare module.
"""
from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger("mim")

MODES = ("none", "blocks", "model")
ALIASES = {"true": "blocks", "false": "none"}


def mode(value: object, key: str = "train.compile") -> str:
    """The compile mode a ``train.compile`` (or ``key``) value names (``true``/``false`` are
    aliases)."""
    name = str(value).lower()
    name = ALIASES.get(name, name)
    if name not in MODES:
        raise ValueError(f"{key}: '{value}' is not one of: {', '.join(MODES)} "
                         "(true = blocks, false = none)")
    return name


# a module class sets it True to be compiled on its own by train.compile=blocks (mim's
# transformer and conv blocks do; a plugin tokenizer's blocks may)
COMPILE_UNIT = "compile_unit"


def compile_blocks(model: nn.Module) -> int:
    """Compile in place every module of ``model`` that declares itself a unit of regional
    compilation (``COMPILE_UNIT``); returns how many were compiled."""
    blocks = [m for m in model.modules() if getattr(m, COMPILE_UNIT, False)]
    if not blocks:
        raise ValueError("train.compile=blocks: the model has no transformer blocks to compile "
                         "(use train.compile=model)")
    for block in blocks:
        block.compile(dynamic=False)  # a stack's blocks see one shape: static graphs
    log.info("compile=blocks: %d blocks compiled in place (on their first call)", len(blocks))
    return len(blocks)
