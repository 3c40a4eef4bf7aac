"""Non-overlapping patch tokenizers: ``patch2d`` (2D grids) and ``cube`` (3D grids).

Both keep their weights in a ``ConvNd`` named ``proj`` so checkpoints are interchangeable with
timm's ``PatchEmbed`` (2D) and Tong et al. 2022's cube embedding (3D). Because kernel == stride, the
convolution equals a linear map on flattened patches; we apply that linear map to the visible
patches only, so masked patches cost nothing (MAE, Sec. 3: the encoder sees only visible patches).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mim.registry import TOKENIZERS
from mim.models.tokenizers.base import Tokenizer, Tokens, gather_tokens, visible_ids

# einops axis names per grid rank: grid axes g*, patch axes p*
_AXES = {2: (("h", "w"), ("ph", "pw")), 3: (("t", "h", "w"), ("pt", "ph", "pw"))}


def _patterns(rank: int) -> tuple[str, str]:
    grid, patch = _AXES[rank]
    spatial = " ".join(f"({g} {p})" for g, p in zip(grid, patch))
    tokens = f"({' '.join(grid)})"
    # target layout (MAE): channels last inside a patch -> 'b c (h ph) (w pw) -> b (h w) (ph pw c)'
    target = f"b c {spatial} -> b {tokens} ({' '.join(patch)} c)"
    # embedding layout: the Conv weight's (c, *kernel) order -> 'b (h w) (c ph pw)'
    embed = f"b c {spatial} -> b {tokens} (c {' '.join(patch)})"
    return target, embed


class PatchTokenizer(Tokenizer):
    """Kernel == stride patch embedding on a grid of rank 2 or 3."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, ...]):
        super().__init__()
        if len(patch_size) not in _AXES:
            raise ValueError(f"patch_size must have 2 or 3 entries, got {patch_size}")
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.patch_size = tuple(int(p) for p in patch_size)
        conv = nn.Conv2d if self.rank == 2 else nn.Conv3d
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self._target_pattern, self._embed_pattern = _patterns(self.rank)
        self._patch_sizes = dict(zip(_AXES[self.rank][1], self.patch_size))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``ids_keep``: ``visible_ids(mask)`` when the caller has it already."""
        patches = rearrange(x, self._embed_pattern, **self._patch_sizes)  # [B, L, C*prod(p)]
        if mask is not None:
            ids_keep = visible_ids(mask) if ids_keep is None else ids_keep  # [B, Lv]
            patches = gather_tokens(patches, ids_keep)  # [B, Lv, C*prod(p)]
        weight = self.proj.weight.flatten(1)  # [D, C*prod(p)], same order as the conv kernel
        return F.linear(patches, weight, self.proj.bias)  # [B, Lv, D]

    def tokenize(self, x: torch.Tensor, mask: torch.Tensor | None) -> Tokens:
        ids_keep = visible_ids(mask) if mask is not None else None  # one host read, not two
        # through __call__, so module hooks run (ZeRO-3 gathers ``proj`` there)
        return Tokens(self(x, mask, ids_keep), ids_keep)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, self._target_pattern, **self._patch_sizes)  # [B, L, P]

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        grid_names = _AXES[self.rank][0]
        inverse = " -> ".join(reversed(self._target_pattern.split(" -> ")))
        return rearrange(y, inverse, **self._patch_sizes, **dict(zip(grid_names, grid)))

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, embed_dim={self.embed_dim}, patch={self.patch_size}"


@TOKENIZERS.register("patch2d")
class Patch2dTokenizer(PatchTokenizer):
    """Square (or rectangular) 2D patches: ``patch_size`` x ``patch_size``."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16, tubelet_size: int = 1,
                 drop_path: float = 0.0):
        super().__init__(in_chans, embed_dim, (patch_size, patch_size))


@TOKENIZERS.register("cube")
class CubeTokenizer(PatchTokenizer):
    """3D cubes ``tubelet_size`` x ``patch_size`` x ``patch_size`` (Tong et al. 2022: 2x16x16)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16, tubelet_size: int = 2,
                 drop_path: float = 0.0):
        super().__init__(in_chans, embed_dim, (tubelet_size, patch_size, patch_size))
