"""Band-aware 2D tokenizers for multispectral rasters ``[C, H, W]`` of any band count.

``group2d``: SatMAE's grouped channels (Cong et al. 2022, arXiv 2207.08051): bands in groups, a
patch embedding per group and a learned group embedding; grid ``(G, h, w)``.
``channel2d``: ChannelViT (Bao et al. 2023, arXiv 2309.16108): one token per band and patch, a
projection shared by the bands and a learned band embedding; grid ``(C, h, w)``; an encoder
trained on all bands encodes any subset (``select_bands``).
``spectral2d``: DOFA (Xiong et al. 2024, arXiv 2403.15356): each band's patch kernel is
generated from its centre wavelength, so one encoder takes any sensor's bands; grid ``(h, w)``.

Written from the papers. As in ``patch.py`` every kernel == stride conv is applied as a linear map
to the visible patches only, so masked patches cost nothing. ``patch_size`` holds the spatial
axes (rank 2); group2d and channel2d put one band or group axis before them
(``leading_axes = 1``): the model repeats its spatial position table over that axis and the
tokenizer adds the band or group identity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from mim.registry import TOKENIZERS
from mim.models.tokenizers.base import Tokenizer, Tokens, gather_tokens, visible_ids

# a Conv2d weight's (c, kh, kw) order: what the patch embeddings multiply
EMBED = "b c (h ph) (w pw) -> b (h w) (c ph pw)"
# MAE's target layout, channels last inside a patch
TARGET = "b c (h ph) (w pw) -> b (h w) (ph pw c)"
# one token per band and patch (channel2d): band-major, as its grid (C, h, w)
PER_BAND = "b c (h ph) (w pw) -> b (c h w) (ph pw)"


def _inverse(pattern: str) -> str:
    return " -> ".join(reversed(pattern.split(" -> ")))


def _xavier(conv: nn.Conv2d) -> nn.Conv2d:
    """MAE initialises a patch conv as a linear layer (xavier-uniform on [D, C*p*p])."""
    nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
    nn.init.zeros_(conv.bias)
    return conv


class BandTokenizer(Tokenizer):
    """What the three share: square patches on ``[C, H, W]``, the grid's checks against the
    bands the next inputs have (``num_bands``), visible-only embedding."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.in_chans, self.embed_dim = in_chans, embed_dim  # in_chans: the run's bands
        self.patch_size = (int(patch_size), int(patch_size))
        self._sizes = {"ph": self.patch_size[0], "pw": self.patch_size[1]}

    @property
    def num_bands(self) -> int:
        """Bands of the next inputs (``in_chans`` unless a tokenizer selects others)."""
        return self.in_chans

    @property
    def leading(self) -> tuple[int, ...]:
        """Sizes of the grid axes before the spatial ones (``leading_axes`` of them)."""
        return ()

    def grid(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[0] != self.num_bands:
            raise ValueError(f"{type(self).__name__} expects samples of shape (C={self.num_bands}"
                             f" bands, 2 spatial axes), got {shape}")
        if any(s % p for s, p in zip(shape[1:], self.patch_size)):
            raise ValueError(f"input size {shape[1:]} is not divisible by the patch size "
                             f"{self.patch_size}")
        return (*self.leading, *(s // p for s, p in zip(shape[1:], self.patch_size)))

    @property
    def pyramid_pool(self) -> tuple[int, ...]:
        return (1,) * self.leading_axes + (2, 2)  # the band or group axis is kept

    def spatial_tokens(self, x: torch.Tensor) -> int:
        """h * w of x [B, C, H, W]: the tokens of one band (group) plane."""
        return math.prod(self.grid(x.shape[1:])[self.leading_axes:])

    def tokenize(self, x: torch.Tensor, mask: torch.Tensor | None) -> Tokens:
        ids_keep = visible_ids(mask) if mask is not None else None  # one host read, not two
        return Tokens(self(x, mask, ids_keep), ids_keep)  # through __call__: hooks run

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        h, w = grid[self.leading_axes:]
        return rearrange(y, _inverse(TARGET), h=h, w=w, **self._sizes)  # [B, C, H, W]

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, embed_dim={self.embed_dim}, patch={self.patch_size}"


# -- group2d ------------------------------------------------------------------------------------
@dataclass
class Group2dConfig:
    """The parameters of ``group2d`` (``model.tokenizer.<field>``)."""

    # band indices of the sample per group, e.g. [[0,1,2,6],[3,4,5,7],[8,9]] (SatMAE's
    # Sentinel-2 groups); every band in exactly one group
    groups: list[list[int]] = field(default_factory=list)


def check_groups(groups: Sequence[Sequence[int]], in_chans: int | None = None) -> None:
    """ValueError naming ``model.tokenizer.groups`` unless the groups are non-empty, disjoint and,
    given ``in_chans``, cover exactly the bands 0..in_chans-1."""
    key = "model.tokenizer.groups"
    if not groups:
        raise ValueError(f"{key}: group2d needs its band groups: set {key}=[[0,1,2],[3,4,5],...] "
                         "(band indices of the sample; every band in one group)")
    seen: dict[int, int] = {}
    for number, group in enumerate(groups):
        if not group:
            raise ValueError(f"{key}: group {number} is empty; give it a band or remove it")
        for band in group:
            if band < 0 or (in_chans is not None and band >= in_chans):
                bound = f"samples of {in_chans} bands (0..{in_chans - 1})" if in_chans else "0.."
                raise ValueError(f"{key}: band {band} of group {number} is out of range for "
                                 f"{bound}")
            if band in seen:
                raise ValueError(f"{key}: band {band} is in groups {seen[band]} and {number}; "
                                 "each band belongs to one group")
            seen[band] = number
    missing = sorted(set(range(in_chans or 0)) - set(seen))
    if missing:
        raise ValueError(f"{key}: band {missing[0]} is in no group, so it would be ignored; add "
                         f"it to a group (bands in none: {missing})")


@TOKENIZERS.register("group2d")
class Group2dTokenizer(BandTokenizer):
    """SatMAE's grouped channels: group ``g``'s bands of a patch -> one token, through the
    group's own patch embedding plus its learned group embedding. Grid ``(G, h, w)``; a token's
    target is its group's bands (``p*p*n_g`` values) padded with zeros to ``p*p*max n_g``."""

    Config = Group2dConfig
    leading_axes = 1
    pads_targets = True

    @classmethod
    def check_config(cls, config: Group2dConfig, model: Any) -> None:
        check_groups(config.groups)  # the band count comes with the data: checked when built

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16,
                 tubelet_size: int = 1, drop_path: float = 0.0,
                 groups: Sequence[Sequence[int]] = ()):
        super().__init__(in_chans, embed_dim, patch_size)
        check_groups(groups, in_chans)
        self.groups = tuple(tuple(int(b) for b in g) for g in groups)
        for number, group in enumerate(self.groups):  # non-persistent: the config holds them
            self.register_buffer(f"_bands{number}", torch.tensor(group), persistent=False)
        p = self.patch_size
        self.projs = nn.ModuleList(_xavier(nn.Conv2d(len(g), embed_dim, p, stride=p))
                                   for g in self.groups)
        self.group_embed = nn.Parameter(torch.zeros(len(self.groups), embed_dim))  # [G, D]
        nn.init.trunc_normal_(self.group_embed, std=0.02)

    @property
    def leading(self) -> tuple[int, ...]:
        return (len(self.groups),)

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch_size) * max(len(g) for g in self.groups)

    def _group_bands(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, C, H, W] -> each group's bands [B, n_g, H, W]."""
        return [x.index_select(1, getattr(self, f"_bands{g}")) for g in range(len(self.groups))]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``ids_keep``: ``visible_ids(mask)`` when the caller has it already."""
        patches = [rearrange(b, EMBED, **self._sizes) for b in self._group_bands(x)]  # [B,hw,K_g]
        if mask is None:
            tokens = torch.cat([self._embed(g, pt) for g, pt in enumerate(patches)], 1)  # [B,L,D]
            embed = repeat(self.group_embed, "g d -> (g s) d", s=patches[0].shape[1])  # [L, D]
            return tokens + embed.to(tokens.dtype)
        ids = visible_ids(mask) if ids_keep is None else ids_keep  # [B, Lv]
        return self._visible(patches, ids)

    def _embed(self, g: int, patches: torch.Tensor) -> torch.Tensor:
        """Group ``g``'s conv as a linear: patches [..., n_g*p*p] -> [..., D]."""
        proj = self.projs[g]
        return F.linear(patches, proj.weight.flatten(1), proj.bias)

    def _visible(self, patches: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Each group's patches [B, hw, K_g], visible ids [B, Lv] on the (G, h, w) grid ->
        tokens [B, Lv, D]: the visible tokens sorted by group, each group's embedded at once."""
        batch, plane = ids.shape[0], patches[0].shape[1]
        group, cell = (ids // plane).flatten(), (ids % plane).flatten()  # [B * Lv] each
        row = torch.arange(batch, device=ids.device).repeat_interleave(ids.shape[1])  # [B * Lv]
        order = torch.argsort(group, stable=True)  # [B * Lv], group by group
        counts = torch.bincount(group, minlength=len(self.groups)).tolist()  # a host read
        parts = [self._embed(g, patches[g][r, c]) for g, (r, c) in
                 enumerate(zip(row[order].split(counts), cell[order].split(counts)))]
        tokens = torch.cat(parts)[torch.argsort(order)]  # [B * Lv, D] back in grid order
        tokens = tokens + self.group_embed[group].to(tokens.dtype)  # [B * Lv, D]
        return tokens.view(batch, ids.shape[1], -1)  # [B, Lv, D]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, G*h*w, P]: each token its group's bands in MAE's layout,
        zeros after them up to P (``pads_targets``)."""
        parts = [rearrange(b, TARGET, **self._sizes) for b in self._group_bands(x)]  # [B,hw,K_g]
        width = self.patch_dim
        return torch.cat([F.pad(pt, (0, width - pt.shape[-1])) for pt in parts], 1)  # [B, L, P]

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """y [B, G*h*w, P] -> x [B, C, H, W] (the padding dropped)."""
        planes = y.unflatten(1, (len(self.groups), -1))  # [B, G, hw, P]
        area = math.prod(self.patch_size)
        out = y.new_empty(y.shape[0], self.in_chans, *(g * p for g, p in
                                                        zip(grid[1:], self.patch_size)))
        for g, bands in enumerate(self.groups):
            values = planes[:, g, :, : area * len(bands)]  # [B, hw, p*p*n_g]
            out[:, list(bands)] = super().unpatchify(values, grid)  # [B, n_g, H, W]
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={[list(g) for g in self.groups]}"


# -- channel2d ----------------------------------------------------------------------------------
def check_band_ids(ids: Sequence[int], bands: int) -> tuple[int, ...]:
    """``ids`` as a tuple, or ValueError unless they are distinct bands in 0..bands-1."""
    ids = tuple(int(i) for i in ids)
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= bands:
        raise ValueError(f"select_bands: distinct band indices in 0..{bands - 1} expected (the "
                         f"run's {bands} bands), got {list(ids)}")
    return ids


@TOKENIZERS.register("channel2d")
class Channel2dTokenizer(BandTokenizer):
    """ChannelViT: one token per band per patch, ``proj`` (a 1-band conv, p x p) shared by the
    bands, plus a learned embedding per band of the run. Grid ``(C, h, w)``, P = p*p; positions
    shared across bands. ``select_bands(ids)``: the next inputs hold only bands ``ids``."""

    leading_axes = 1

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16,
                 tubelet_size: int = 1, drop_path: float = 0.0):
        super().__init__(in_chans, embed_dim, patch_size)
        p = self.patch_size
        self.proj = _xavier(nn.Conv2d(1, embed_dim, p, stride=p))  # weight [D, 1, p, p]
        self.band_embed = nn.Parameter(torch.zeros(in_chans, embed_dim))  # [C_run, D]
        nn.init.trunc_normal_(self.band_embed, std=0.02)
        self.register_buffer("band_ids", torch.arange(in_chans), persistent=False)  # [C]

    def select_bands(self, ids: Sequence[int] | None) -> None:
        """The next inputs hold only the run's bands ``ids``, in this order (None: all of them):
        ``grid`` takes ``len(ids)`` channels and the band embedding is indexed by ``ids``."""
        chosen = range(self.in_chans) if ids is None else check_band_ids(ids, self.in_chans)
        self.band_ids = torch.tensor(list(chosen), device=self.band_embed.device)

    @property
    def num_bands(self) -> int:
        return self.band_ids.shape[0]

    @property
    def leading(self) -> tuple[int, ...]:
        return (self.num_bands,)

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        patches = self.patchify(x)  # [B, C*h*w, p*p]
        band = repeat(self.band_embed[self.band_ids], "c d -> (c s) d",
                      s=self.spatial_tokens(x))  # [L, D]
        if mask is not None:
            ids = visible_ids(mask) if ids_keep is None else ids_keep  # [B, Lv]
            patches, band = gather_tokens(patches, ids), band[ids]  # [B, Lv, p*p], [B, Lv, D]
        tokens = F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # [B, Lv, D]
        return tokens + band.to(tokens.dtype)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, PER_BAND, **self._sizes)  # [B, L, P]

    def unpatchify(self, y: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        c, h, w = grid
        return rearrange(y, _inverse(PER_BAND), c=c, h=h, w=w, **self._sizes)  # [B, C, H, W]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bands={self.num_bands} of {self.in_chans}"


# -- spectral2d ---------------------------------------------------------------------------------
@dataclass
class Spectral2dConfig:
    """The parameters of ``spectral2d`` (``model.tokenizer.<field>``)."""

    # centre wavelength of each band in µm, in the samples' band order (from data.wavelengths)
    wavelengths: list[float] = field(default_factory=list)
    generator_dim: int = 128  # width of the kernel generator (DOFA: 128)
    generator_heads: int = 4  # attention heads of its transformer layer across the bands

    def __post_init__(self) -> None:
        if self.generator_dim < 2 or self.generator_dim % 2:
            raise ValueError(f"model.tokenizer.generator_dim: an even width >= 2 expected (its "
                             f"sin-cos wavelength features), got {self.generator_dim}")
        if self.generator_heads < 1 or self.generator_dim % self.generator_heads:
            raise ValueError(f"model.tokenizer.generator_heads: {self.generator_heads} does not "
                             f"divide model.tokenizer.generator_dim={self.generator_dim}")


def check_wavelengths(wavelengths: Sequence[float], bands: int | None = None) -> tuple[float, ...]:
    """``wavelengths`` as a tuple, or ValueError naming ``data.wavelengths`` unless they are
    positive (µm) and, given ``bands``, one per band."""
    values = tuple(float(w) for w in wavelengths)
    if not values:
        raise ValueError("data.wavelengths: spectral2d makes each band's patch kernel from its "
                         "centre wavelength: set data.wavelengths=[0.49,0.56,0.665,...] (µm, one "
                         "per band)")
    if min(values) <= 0:
        raise ValueError(f"data.wavelengths: positive wavelengths in µm expected, got "
                         f"{list(values)}")
    if bands is not None and len(values) != bands:
        raise ValueError(f"data.wavelengths: {len(values)} wavelengths for samples of {bands} "
                         "bands; give one per band")
    return values


def wavelength_features(dim: int, wavelengths: torch.Tensor) -> torch.Tensor:
    """wavelengths [C] in µm -> [C, dim]: sin-cos of the wavelength in nm (DOFA), sin on the
    first half of the channels and cos on the second, frequencies 1 / 10000^(2i/dim)."""
    half = torch.arange(dim // 2, device=wavelengths.device, dtype=torch.float32)
    angles = (wavelengths.float() * 1000.0)[:, None] / 10000.0 ** (half / (dim / 2))  # [C, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # [C, dim]


class KernelGenerator(nn.Module):
    """DOFA's dynamic weight generator: the bands' wavelength features and a learned bias token
    through one transformer layer across the bands -> a patch kernel per band and the bias."""

    SCALE = 0.01  # DOFA scales the generated weights and bias, so they start small

    def __init__(self, dim: int, heads: int, embed_dim: int, kernel: int):
        super().__init__()
        self.dim = dim
        self.embed = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.bias_token = nn.Parameter(torch.zeros(1, dim))  # [1, dim]
        nn.init.trunc_normal_(self.bias_token, std=0.02)
        self.mix = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                              activation="gelu", batch_first=True,
                                              norm_first=True)
        self.to_weight = nn.Linear(dim, embed_dim * kernel)  # one band's kernel [D * p*p]
        self.to_bias = nn.Linear(dim, embed_dim)

    def forward(self, wavelengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wavelengths [C] µm -> (weight [D, C*p*p] in a Conv2d's (c, kh, kw) order, bias [D])."""
        bands = self.embed(wavelength_features(self.dim, wavelengths))  # [C, dim]
        seq = torch.cat([bands, self.bias_token.to(bands.dtype)])[None]  # [1, C + 1, dim]
        out = self.mix(seq)[0]  # [C + 1, dim]
        kernels = self.to_weight(out[:-1] + bands)  # [C, D * p*p]
        weight = rearrange(kernels, "c (d k) -> d (c k)", d=self.to_bias.out_features)
        return weight * self.SCALE, self.to_bias(out[-1]) * self.SCALE


@TOKENIZERS.register("spectral2d")
class Spectral2dTokenizer(BandTokenizer):
    """DOFA-style wavelength-conditioned patch embedding: the kernel of each band generated from
    its centre wavelength (``wavelengths``, a persistent buffer, so state dicts carry them).
    Grid ``(h, w)``, P = p*p*C (patch2d's target layout). ``set_wavelengths`` and
    ``select_bands`` give the same encoder another band set."""

    Config = Spectral2dConfig

    @classmethod
    def check_config(cls, config: Spectral2dConfig, model: Any) -> None:
        check_wavelengths(config.wavelengths)  # the band count comes with the data

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16,
                 tubelet_size: int = 1, drop_path: float = 0.0,
                 wavelengths: Sequence[float] = (), generator_dim: int = 128,
                 generator_heads: int = 4):
        super().__init__(in_chans, embed_dim, patch_size)
        self.run_wavelengths = check_wavelengths(wavelengths, in_chans)
        self.register_buffer("wavelengths", torch.tensor(self.run_wavelengths))  # [C] µm
        self.generator = KernelGenerator(generator_dim, generator_heads, embed_dim,
                                         math.prod(self.patch_size))

    def set_wavelengths(self, wavelengths: Sequence[float]) -> None:
        """The next inputs' bands, by centre wavelength (µm): any sensor, any count."""
        values = check_wavelengths(wavelengths)
        self.wavelengths = torch.tensor(values, device=self.wavelengths.device)

    def select_bands(self, ids: Sequence[int] | None) -> None:
        """The next inputs hold only the run's bands ``ids``, in this order (None: all)."""
        chosen = range(self.in_chans) if ids is None else check_band_ids(ids, self.in_chans)
        self.set_wavelengths([self.run_wavelengths[i] for i in chosen])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict of another band set: the buffer takes its size before the copy."""
        saved = state_dict.get(prefix + "wavelengths")
        if saved is not None and saved.shape != self.wavelengths.shape:
            self.wavelengths = self.wavelengths.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_bands(self) -> int:
        return self.wavelengths.shape[0]

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch_size) * self.num_bands

    def kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [D, C*p*p], bias [D]) for the current wavelengths."""
        return self.generator(self.wavelengths)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        self.grid(x.shape[1:])  # the band count against the wavelengths, in one line
        patches = rearrange(x, EMBED, **self._sizes)  # [B, L, C*p*p]
        if mask is not None:
            ids = visible_ids(mask) if ids_keep is None else ids_keep  # [B, Lv]
            patches = gather_tokens(patches, ids)  # [B, Lv, C*p*p]
        weight, bias = self.kernels()
        return F.linear(patches, weight.to(patches.dtype), bias.to(patches.dtype))  # [B, Lv, D]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, TARGET, **self._sizes)  # [B, L, P]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bands={self.num_bands} (by wavelength)"
