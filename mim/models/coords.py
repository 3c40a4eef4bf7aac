"""Date and location embeddings (Prithvi-EO-2.0's "TL" variants, arXiv 2412.02732): what a
sample says of when and where it was taken, added to its tokens.

A sample's ``coords`` is ``[T, 4]``: per date (year, day of the year) and the place (latitude,
longitude, the same on every row); NaN where it is unknown. The date embedding is the sin-cos of
the year on half the width and of the day on the other half, repeated over each date's tokens
(the token grid is date-major); the location embedding is the sin-cos of latitude and longitude
alike, added to every token. Each is multiplied by a scale, 1 or learned from 0.1. This is
terratorch's ``TemporalEncoder`` / ``LocationEncoder`` formula, so Prithvi's TL weights (their
``scale``) load exactly. A sample whose date or place is unknown, or dropped (``coords_drop``, in
training only, so that the model also works without them), gets none of that embedding.
"""
from __future__ import annotations

import torch
from einops import repeat
from torch import nn


KINDS = ("none", "time", "location", "both")


def _sincos32(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, dim], sin then cos, in float32: a year's angles (2020 rad) round there as
    they did when Prithvi's TL weights were trained, so those weights see the codes they
    learned from (``pos_embed.sincos_1d``, float64, differs by ~3e-5 at year scale)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32, device=positions.device)
                            / (dim / 2.0))  # [dim/2]
    angles = positions.float()[:, None] * omega[None]  # [N, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _pair(dim: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[N] and [N] -> [N, dim]: sin-cos of ``first`` on dim // 2, of ``second`` on the rest."""
    half = dim // 2
    return torch.cat([_sincos32(half, first), _sincos32(dim - half, second)], dim=-1)


class CoordsEmbed(nn.Module):
    def __init__(self, dim: int, kind: str, learn_scale: bool = False):
        super().__init__()
        self.dim, self.time, self.location = dim, kind in ("time", "both"), \
            kind in ("location", "both")
        for name, used in (("time_scale", self.time), ("location_scale", self.location)):
            if not used:
                setattr(self, name, None)
            elif learn_scale:  # learned from 0.1, as Prithvi's coords_scale_learn
                setattr(self, name, nn.Parameter(torch.full((1,), 0.1)))
            else:  # fixed at 1 (a buffer: in the state dict, never trained)
                self.register_buffer(name, torch.ones(1))

    def forward(self, coords: torch.Tensor, tokens: int) -> torch.Tensor:
        """coords [B, T, 4] -> [B, tokens, dim], to add to the token grid (date-major)."""
        batch, dates = coords.shape[:2]
        out = coords.new_zeros(batch, tokens, self.dim, dtype=torch.float32)
        if self.time:
            when = coords[..., :2].reshape(-1, 2).float()  # [B T, 2]
            known = ~torch.isnan(when).any(-1)
            table = _pair(self.dim, *when.nan_to_num(0.0).unbind(-1)).to(out)  # [B T, dim]
            table = (table * known[:, None]).view(batch, dates, self.dim)
            per_date = repeat(table, "b t d -> b (t n) d", n=tokens // dates)  # [B, L, dim]
            out = out + self.time_scale * per_date
        if self.location:
            where = coords[:, 0, 2:].float()  # [B, 2]
            known = ~torch.isnan(where).any(-1)
            table = _pair(self.dim, *where.nan_to_num(0.0).unbind(-1)).to(out)  # [B, dim]
            out = out + self.location_scale * (table * known[:, None])[:, None]
        return out
