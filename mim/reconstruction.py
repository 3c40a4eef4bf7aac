"""Reconstruction panels for any modality: original | masked | reconstruction | pasted.

With a norm-pix target the prediction is in per-patch normalised units; it is mapped back with
each patch's own mean and variance (MAE's visualisation notebook does the same), so the pictures
are in the input's domain. The modality's ``render`` turns the panels into a file.
"""
from __future__ import annotations

import torch

from mim.models.model import MaskedAutoencoder, patch_stats
from mim.spec import Panels


@torch.no_grad()
def reconstruction_panels(model: MaskedAutoencoder, x: torch.Tensor, mask: torch.Tensor,
                          targets: torch.Tensor | None = None,
                          coords: torch.Tensor | None = None) -> Panels:
    """x [N, C, *spatial], mask [N, L] -> Panels, each [N, C, *spatial] on the CPU, fp32.

    ``targets`` [N, L] (decoder masking): the decoder predicts only those masked tokens, as in
    training; the masked tokens it does not score are striped (the sample's darkest and
    brightest values alternating) in the reconstruction panels, so scored and unscored differ.
    """
    tokenizer = model.tokenizer
    pred = model(x, mask, targets, coords).pred.float()  # [N, L, P]; coords [N, T, 4]
    patches = tokenizer.patchify(x).float()  # [N, L, P]; NaN where there is no data
    if model.norm_pix_loss:  # the target's own statistics (over the data's values), inverted
        weight = model.value_weight(x, ~torch.isnan(x) if model.nodata else None)
        mean, std = patch_stats(patches.nan_to_num(0.0), weight)
        pred = pred * std + mean
    grid = tokenizer.grid(x.shape[1:])
    hidden = tokenizer.hidden(mask, tuple(x.shape[1:]))  # [N, L, 1] patches, or [N, L, P]
    if targets is not None:
        unscored = (mask & ~targets).unsqueeze(-1)  # [N, L, 1]
        low = patches.amin(dim=(1, 2), keepdim=True)  # [N, 1, 1]
        high = patches.amax(dim=(1, 2), keepdim=True)
        odd = (torch.arange(patches.shape[-1], device=patches.device) % 2).bool()  # [P]
        pred = torch.where(unscored, torch.where(odd, high, low), pred)  # [N, L, P]
    panels = {
        "original": patches,
        "masked": patches.masked_fill(hidden, 0.0),
        "reconstruction": pred,
        "pasted": torch.where(hidden, pred, patches),
    }
    return Panels(**{k: tokenizer.unpatchify(v, grid).cpu() for k, v in panels.items()})
