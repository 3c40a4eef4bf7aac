"""Reconstruction panels for any modality: original | masked | reconstruction | pasted.

With a norm-pix target the prediction is in per-patch normalised units; it is mapped back with
each patch's own mean and variance (MAE's visualisation notebook does the same), so the pictures
are in the input's domain. The modality's ``render`` turns the panels into a file.
"""
from __future__ import annotations

import torch

from mim.model import MaskedAutoencoder, patch_stats
from mim.spec import Panels


@torch.no_grad()
def reconstruction_panels(model: MaskedAutoencoder, x: torch.Tensor,
                          mask: torch.Tensor) -> Panels:
    """x [N, C, *spatial], mask [N, L] -> Panels, each [N, C, *spatial] on the CPU, fp32."""
    tokenizer = model.tokenizer
    pred = model(x, mask).pred.float()  # [N, L, P]
    patches = tokenizer.patchify(x).float()  # [N, L, P]
    if model.norm_pix_loss:
        mean, std = patch_stats(patches)  # the target's own statistics, inverted
        pred = pred * std + mean
    grid = tokenizer.grid(x.shape[1:])
    hidden = tokenizer.hidden(mask, tuple(x.shape[1:]))  # [N, L, 1] patches, or [N, L, P]
    panels = {
        "original": patches,
        "masked": patches.masked_fill(hidden, 0.0),
        "reconstruction": pred,
        "pasted": torch.where(hidden, pred, patches),
    }
    return Panels(**{k: tokenizer.unpatchify(v, grid).cpu() for k, v in panels.items()})
