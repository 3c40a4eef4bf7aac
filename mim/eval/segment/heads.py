"""Segmentation heads on an encoder's token maps, 2D or 3D alike (``rank`` spatial axes).

- ``linear``: BatchNorm + 1x1 conv on the last block's tokens (after the final norm), upsampled
  to the input: DINOv2's linear protocol, the encoder frozen.
- ``upernet``: four blocks' maps through the feature pyramid of BEiT / MAE's detection and
  segmentation recipes (x4 by two 2x2 transposed convolutions, x2 by one, x1, x0.5 by max
  pooling: mmseg's ``Feature2Pyramid``), or a hybrid (MCMAE) model's own ``pyramid()``
  (strides 4-32), then UperNet (Xiao et al. 2018): a pyramid pooling module (scales 1, 2, 3,
  6) on the coarsest map, an FPN top-down path, all levels fused at the finest. Ours: no
  well-kept package ships UperNet for current torch (mmsegmentation needs mmcv, which does not
  build against it).
- ``unetr``: UNETR's decoder (Hatamizadeh et al. 2022) from MONAI's blocks: a conv block on the
  input, one skip per intermediate block upsampled by transposed convolutions to strides 2, 4,
  ... patch / 2, and the last block's map decoded up through them. UNETR fixes the patch at
  16 (three skips); a patch of 2^n here takes n - 1 skips, from n evenly spaced blocks.

Token maps: the prefix (cls) dropped, tokens laid on their grid; of the grid axes before the
``rank`` spatial ones, a time stack's dates are concatenated into the channels (terratorch's
``ReshapeTokensToImage`` with its ``effective_time_dim``: the head sees each date's features,
so a class told by its change over time can be found), and a band tokenizer's bands or groups
averaged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mim.models.model import Encoded, MaskedAutoencoder

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
DECONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
POOL_SCALES = (1, 2, 3, 6)  # UperNet's pyramid pooling module


def token_map(tokens: torch.Tensor, encoded: Encoded, rank: int, dates: int = 0
              ) -> torch.Tensor:
    """tokens [B, prefix + L, D] on ``encoded.grid`` -> [B, D', *grid[-rank:]]: of the leading
    grid axes, the last ``dates`` (a time stack's) concatenated into the channels, the others
    (a band tokenizer's) averaged; D' = D x their sizes."""
    maps = tokens[:, encoded.num_prefix:].transpose(1, 2)  # [B, D, L]
    maps = maps.reshape(*maps.shape[:2], *encoded.grid)  # [B, D, *grid]
    lead = len(encoded.grid) - rank
    fold = min(dates, lead)
    if lead > fold:
        maps = maps.mean(dim=tuple(range(2, 2 + lead - fold)))  # [B, D, *dates, *spatial]
    return maps.flatten(1, 1 + fold)  # [B, D * prod(dates), *spatial]


def evenly_spaced(depth: int, count: int) -> list[int]:
    """``count`` block indices (0-based) ending at the last: 12, 4 -> [2, 5, 8, 11]."""
    return sorted({max(0, round(depth * (i + 1) / count) - 1) for i in range(count)})


def upsampling_steps(patch: tuple[int, ...]) -> int:
    """n of a patch of 2^n on every axis (UNETR's decoder doubles its maps n times)."""
    side = patch[0]
    if len(set(patch)) != 1 or side < 2 or side & (side - 1):
        raise ValueError(f"segment.head=unetr: the patch must be 2^n a side on every axis, got "
                         f"{'x'.join(map(str, patch))}")
    return int(math.log2(side))


class ConvNormAct(nn.Sequential):
    """conv (no bias) + BatchNorm + ReLU: mmcv's ``ConvModule`` as UperNet uses it."""

    def __init__(self, rank: int, cin: int, cout: int, kernel: int):
        super().__init__(CONV[rank](cin, cout, kernel, padding=kernel // 2, bias=False),
                         NORM[rank](cout), nn.ReLU(inplace=True))


class LinearHead(nn.Module):
    """BatchNorm + 1x1 conv on the chosen blocks' token maps, concatenated along channels
    (one block: the DINOv2 linear protocol; several: its multi-layer variant)."""

    def __init__(self, widths: list[int], classes: int, rank: int):
        super().__init__()
        dim = sum(widths)
        self.norm, self.conv = NORM[rank](dim), CONV[rank](dim, classes, 1)

    def forward(self, maps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat(maps, dim=1)  # [B, sum of widths, *grid]
        return self.conv(self.norm(stacked))  # [B, classes, *grid]


class Pyramid(nn.Module):
    """Four maps of one stride -> strides x4, x2, x1, x0.5 (mmseg's ``Feature2Pyramid``)."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        up = DECONV[rank]
        self.levels = nn.ModuleList([
            nn.Sequential(up(dim, dim, 2, 2), NORM[rank](dim), nn.GELU(), up(dim, dim, 2, 2)),
            up(dim, dim, 2, 2), nn.Identity(), POOL[rank](2)])

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(m) for level, m in zip(self.levels, maps)]


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class UperHead(nn.Module):
    """UperNet on maps finest first, of ``widths`` channels."""

    def __init__(self, widths: list[int], channels: int, classes: int, rank: int):
        super().__init__()
        self.pool = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s) if rank == 2 else nn.AdaptiveAvgPool3d(s),
                          ConvNormAct(rank, widths[-1], channels, 1)) for s in POOL_SCALES)
        self.bottleneck = ConvNormAct(rank, widths[-1] + len(POOL_SCALES) * channels, channels, 3)
        self.lateral = nn.ModuleList(ConvNormAct(rank, w, channels, 1) for w in widths[:-1])
        self.smooth = nn.ModuleList(ConvNormAct(rank, channels, channels, 3) for _ in widths[:-1])
        self.fuse = ConvNormAct(rank, len(widths) * channels, channels, 3)
        self.dropout = nn.Dropout(0.1)
        self.classify = CONV[rank](channels, classes, 1)

    def forward(self, maps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        top = maps[-1]
        pooled = [_resize(p(top), tuple(top.shape[2:])) for p in self.pool]
        levels = [lat(m) for lat, m in zip(self.lateral, maps)]
        levels.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(levels) - 1, 0, -1):  # top-down: each level plus the one above
            levels[i - 1] = levels[i - 1] + _resize(levels[i], tuple(levels[i - 1].shape[2:]))
        outs = [conv(level) for conv, level in zip(self.smooth, levels)] + [levels[-1]]
        size = tuple(outs[0].shape[2:])
        fused = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))
        return self.classify(self.dropout(fused))  # [B, classes, *finest]


class UperNet(nn.Module):
    def __init__(self, widths: list[int], channels: int, classes: int, rank: int,
                 pyramid: bool):
        super().__init__()
        self.neck = Pyramid(widths[-1], rank) if pyramid else None
        self.head = UperHead(widths, channels, classes, rank)

    def forward(self, maps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(maps) if self.neck is not None else maps, x)


class UnetrDecoder(nn.Module):
    """UNETR's decoder from MONAI's blocks (instance norm, residual blocks, as ``UNETR``)."""

    def __init__(self, in_chans: int, dim: int, classes: int, rank: int, steps: int,
                 features: int):
        super().__init__()
        from monai.networks.blocks import (UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock,
                                           UnetrUpBlock)

        common = dict(spatial_dims=rank, kernel_size=3, norm_name="instance", res_block=True)
        self.stem = UnetrBasicBlock(in_channels=in_chans, out_channels=features, stride=1,
                                    **common)
        self.skips = nn.ModuleList(  # skip j at stride 2^j: n - j doublings of a block's map
            UnetrPrUpBlock(in_channels=dim, out_channels=features * 2 ** j,
                           num_layer=steps - j - 1, stride=1, upsample_kernel_size=2,
                           conv_block=True, **common) for j in range(1, steps))
        self.ups = nn.ModuleList(  # the deepest first: to stride 2^(j - 1) with skip j - 1
            UnetrUpBlock(in_channels=dim if j == steps else features * 2 ** j,
                         out_channels=features * 2 ** (j - 1), upsample_kernel_size=2,
                         **common) for j in range(steps, 0, -1))
        self.out = UnetOutBlock(spatial_dims=rank, in_channels=features, out_channels=classes)

    def forward(self, maps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """x [B, C', *spatial]: the Segmenter has folded a time stack's dates into C'."""
        skips = [self.stem(x)] + [block(m) for block, m in zip(self.skips, maps[:-1])]
        y = maps[-1]
        for up, skip in zip(self.ups, reversed(skips)):
            y = up(y, skip)
        return self.out(y)  # [B, classes, *input]


class Segmenter(nn.Module):
    """An encoder, the blocks it hands on, and a head -> logits at the input's size."""

    def __init__(self, mae: MaskedAutoencoder, head: nn.Module, blocks: list[int], rank: int,
                 frozen: bool, pyramid: bool = False, dates: int = 0):
        super().__init__()
        self.encoder, self.head, self.blocks, self.rank = mae, head, blocks, rank
        self.dates = dates  # a sample's axes between its channels and its spatial ones
        self.frozen, self.use_pyramid = frozen, pyramid
        if frozen:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> "Segmenter":
        super().train(mode)
        if self.frozen:  # a frozen encoder stays in eval mode (no drop path, fixed norms)
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps the head takes, finest first: [B, C_k, *grid_k]."""
        if self.use_pyramid:  # a hybrid model's own stages (MCMAE: strides 4 to 32)
            return self.encoder.pyramid(x)
        states, encoded = self.encoder.hidden_states(x, self.blocks)
        return [token_map(s, encoded, self.rank, self.dates) for s in states]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *lead, *spatial] -> logits [B, classes, *spatial] (``lead``: a time
        stack's dates)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.features(x)
        spatial = tuple(x.shape[-self.rank:])
        pixels = x.reshape(x.shape[0], -1, *spatial)  # [B, C * prod(lead), *spatial]
        logits = self.head(maps, torch.nan_to_num(pixels) if self.encoder.nodata else pixels)
        if tuple(logits.shape[2:]) != spatial:
            logits = _resize(logits, spatial)
        return logits


def build_segmenter(mae: MaskedAutoencoder, head: str, classes: int, blocks: list[int] | None,
                    rank: int, sample: tuple[int, ...], channels: int,
                    features: int) -> Segmenter:
    """The head ``head`` on ``mae`` for crops of ``sample`` ([C, *lead, *spatial], ``rank``
    spatial axes): the blocks it reads, the channels of their maps (one forward of a zero
    crop), the head built to fit."""
    depth = len(mae.blocks)
    zero = torch.zeros(1, *sample)  # [1, C, *lead, *spatial]
    hybrid = bool(mae.encode(zero).stages)
    if head == "unetr":
        steps = upsampling_steps(tuple(mae.tokenizer.patch_size[-rank:]))
        blocks = blocks or evenly_spaced(depth, steps)
        if len(blocks) != steps:
            raise ValueError(f"segment.blocks: unetr with a patch of 2^{steps} takes {steps} "
                             f"blocks, got {len(blocks)}")
    else:
        blocks = blocks or (evenly_spaced(depth, 4) if head == "upernet" else [depth - 1])
    if max(blocks) >= depth:
        raise ValueError(f"segment.blocks: the encoder has blocks 0 to {depth - 1}, got "
                         f"{max(blocks)}")
    pyramid = hybrid and head == "upernet"
    dates = len(sample) - 1 - rank
    probe = Segmenter(mae, nn.Identity(), blocks, rank, frozen=False, pyramid=pyramid,
                      dates=dates)
    with torch.no_grad():
        widths = [m.shape[1] for m in probe.features(zero)]
    dim = widths[-1]
    if head == "linear":
        module: nn.Module = LinearHead(widths, classes, rank)
    elif head == "upernet":
        if not pyramid and len(blocks) != 4:
            raise ValueError(f"segment.blocks: upernet takes 4 blocks, got {len(blocks)}")
        module = UperNet(widths if pyramid else [dim] * 4, channels, classes, rank, not pyramid)
    else:
        stem_chans = math.prod(sample[:-rank])  # C * prod(lead)
        module = UnetrDecoder(stem_chans, dim, classes, rank, steps, features)
    return Segmenter(mae, module, blocks, rank, frozen=head == "linear", pyramid=pyramid,
                     dates=dates)


def flat_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, K, *s] -> [B * prod(s), K]."""
    return rearrange(logits, "b k ... -> (b ...) k")
