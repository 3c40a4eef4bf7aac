"""Weight interchange: read MAE, timm and Hugging Face weights into mim, and write them back.

    model = mim.load_pretrained("mae_pretrain_vit_base.pth")          # format detected
    mim.convert.convert("runs/image/.../abc123", "out/timm", to="timm")  # mim -> timm folder

Readable: mim runs, checkpoints and exports; facebookresearch/mae checkpoints (with decoder, or
encoder-only releases); timm ViT weights (file or ``config.json`` folder); Hugging Face
``save_pretrained`` folders of the model types registered in ``hf.HF_READERS`` (ViTMAE here,
3D layouts from modality plugins); Prithvi-EO 1.0 / 2.0 weights (file, or the repository's
folder with its ``config.json``); SatMAE's group-channel checkpoints (onto ``group2d``).
Writable: ``mim``, ``mae``, ``timm`` (the encoder as a VisionTransformer), ``hf`` (the layout
registered for the model's grid rank), ``prithvi`` (Prithvi-EO-2.0's names and config) and
``monai`` (the encoder as MONAI's ``ViT`` / ``UNETR.vit``, 2D patches or spatial 3D cubes; not
read back: ``monai.py``).
Nothing is ever unpickled beyond tensors (see ``storage.py``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from mim.convert.common import ConvertError, Converted
from mim.convert.formats import read_weights, write_mim
from mim.convert.hf import write_hf
from mim.convert.monai import write_monai
from mim.convert.prithvi import write_prithvi
from mim.convert.vit import write_mae, write_timm
from mim.rundir import check_export_target, discard, publish, staging_path

log = logging.getLogger("mim")
WRITERS: dict[str, Callable[..., Path]] = {"mim": write_mim, "mae": write_mae,
                                            "timm": write_timm, "hf": write_hf,
                                            "prithvi": write_prithvi, "monai": write_monai}


def load_pretrained(path: str | Path, **overrides: Any):
    """A ``MaskedAutoencoder`` with the weights at ``path`` (any readable format; an
    encoder-only file gets a freshly initialised decoder), in eval mode like a loaded model in
    timm and transformers (``.train()`` to fine-tune). ``overrides``: ModelConfig fields."""
    return read_weights(path, **overrides).build().eval()


def convert(source: str | Path, output: str | Path, to: str,
            input_size: tuple[int, ...] | None = None, overwrite: bool = False,
            drop_coords: bool = False, **overrides: Any) -> Path:
    """Read ``source`` (format detected) and write it as ``to`` at ``output``.

    ``output`` must be new or empty, and outside any run directory (a ``ConfigError``
    otherwise, before anything is read); ``overwrite=True`` replaces an export mim wrote (what
    a ``mim-export.json`` lists), nothing else. The export is written into a temporary sibling
    and renamed into place once complete (``mim/rundir.py``).
    ``input_size`` (spatial sizes) exports for another input size than the weights were made
    for: the position table is resized to its token grid; the size is logged.
    ``drop_coords``: read Prithvi-EO TL weights without their date and location embeddings."""
    if to not in WRITERS:
        raise ConvertError(f"to: unknown format '{to}'; valid: {', '.join(WRITERS)}")
    target = Path(output).expanduser().absolute()
    check_export_target(target, overwrite)
    converted = read_weights(source, drop_coords=drop_coords, **overrides)
    size = tuple(int(s) for s in input_size) if input_size is not None else None
    staged = staging_path(target)
    staged.mkdir(parents=True)
    try:
        written = WRITERS[to](converted, staged / target.name, size)
        publish(staged, target, to, overwrite)
    finally:
        discard(staged)
    made_for = size or converted.input_size
    if made_for:  # a timm or HF model is fixed at this size: say it where the user looks
        log.info("%s: to=%s export for inputs of %s%s", target, to,
                 "x".join(map(str, made_for)),
                 "" if size else " (the size the weights were made for; input_size=[...] "
                 "exports another)")
    return target / written.relative_to(staged / target.name)


__all__ = ["ConvertError", "Converted", "read_weights", "load_pretrained", "convert",
           "WRITERS"]
