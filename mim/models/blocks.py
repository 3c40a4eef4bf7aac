"""The pre-norm transformer block of ViT and MAE, with timm's parameter names.

``norm1``, ``attn.qkv`` (fused q/k/v), ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``: a
state dict of these blocks is one of timm's ``VisionTransformer`` blocks and MAE's, so weights
move between them with no renaming (``mim/convert``). Attention is PyTorch's fused
``scaled_dot_product_attention``; ``attend`` picks its precision on the CPU (below).

``WindowBlock`` is the same block (the same parameters) with attention inside windows of the
token grid, shifted in alternate blocks (Swin; AudioMAE's local decoder).

``Mlp`` and ``DropPath`` are ours, not timm's (the same parameters and numbers, checked against
timm in tests/unit/test_blocks.py): importing timm imports torchvision and with it
``torch._dynamo``, 1.9 of the 5 seconds a one-step ``mim train`` took to start on a Zen 4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# Up to this many tokens, bf16 attention on a CPU is computed in fp32 (``attend``)
CPU_FP32_ATTENTION_MAX_TOKENS = 512


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention, q, k, v [B, heads, N, head_dim] -> [B, heads, N, head_dim]; ``mask``
    bool broadcastable to [B, heads, N, N] (True: may attend), None: every pair.

    Under bf16 autocast on a CPU, short sequences run the fused kernel in fp32: PyTorch's CPU
    flash-attention kernel is slower in bf16 than in fp32 there (forward + backward on Zen 4:
    71 against 50 ms for the MAE decoder's [8, 16, 197, 32], 17 against 7.5 ms for the ViT-B
    encoder's [8, 12, 50, 64], equal at [2, 12, 512, 64]) and faster beyond (316 against
    373 ms for a VideoMAE decoder's [2, 6, 1568, 64]). The matrix products around it stay in
    bf16. Elsewhere (CUDA, XLA) autocast decides.
    """
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16
            and q.shape[-2] <= CPU_FP32_ATTENTION_MAX_TOKENS):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, x [..., dim] -> [..., dim] (timm's ``Mlp`` names, no dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, each sample's residual branch is
    dropped with probability ``p`` and the kept ones scaled by 1 / (1 - p); x [B, ...]."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # one draw per sample, broadcast over its other axes: [B, 1, ..., 1]
        kept = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * kept.div_(keep) if keep > 0 else x * kept

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, dim] -> [B, N, dim]; ``mask`` as ``attend`` takes it."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3,
                            h=self.num_heads)
        return self.proj(rearrange(attend(q, k, v, mask), "b h n d -> b n (h d)"))


class Block(nn.Module):
    """x + DropPath(Attention(LN(x))), then x + DropPath(MLP(LN(x))); x [B, N, dim]."""

    compile_unit = True  # train.compile=blocks compiles each block (mim/engine/compiling.py)

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# -- attention within windows of the token grid (Swin, Liu et al. 2021; AudioMAE's decoder) -----
def check_window(window: tuple[int, ...], grid: tuple[int, ...]) -> None:
    """ValueError naming ``model.decoder_window`` unless ``window`` has one size per axis of
    the token ``grid`` and each divides its axis (no padding)."""
    if len(window) != len(grid):
        raise ValueError(f"model.decoder_window: {list(window)} has {len(window)} sizes, the "
                         f"token grid {list(grid)} has {len(grid)} axes; give one size per axis")
    if any(g % w for g, w in zip(grid, window)):
        valid = " x ".join("{" + ",".join(str(d) for d in range(1, g + 1) if g % d == 0) + "}"
                           for g in grid)
        raise ValueError(f"model.decoder_window: {list(window)} does not divide the token grid "
                         f"{list(grid)}; valid: a divisor of each axis, {valid}")


def _window_names(rank: int) -> tuple[str, str]:
    """einops patterns of a flattened grid [B, L, D] and of its windows [B * nW, N, D]."""
    grid = " ".join(f"n{i} w{i}" for i in range(rank))  # (n0 w0)(n1 w1) flattened row-major
    windows = " ".join(f"n{i}" for i in range(rank)), " ".join(f"w{i}" for i in range(rank))
    return f"b ({grid}) d", f"(b {windows[0]}) ({windows[1]}) d"


def to_windows(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]) -> torch.Tensor:
    """x [B, L, D] on ``grid`` -> [B * nW, N, D]: the tokens of each window (N = prod(window)),
    windows in grid order, batch outermost."""
    flat, windows = _window_names(len(grid))
    sizes = {f"w{i}": w for i, w in enumerate(window)}
    sizes.update({f"n{i}": g // w for i, (g, w) in enumerate(zip(grid, window))})
    return rearrange(x, f"{flat} -> {windows}", **sizes)


def from_windows(x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...]
                 ) -> torch.Tensor:
    """The inverse of ``to_windows``: [B * nW, N, D] -> [B, L, D]."""
    flat, windows = _window_names(len(grid))
    sizes = {f"w{i}": w for i, w in enumerate(window)}
    sizes.update({f"n{i}": g // w for i, (g, w) in enumerate(zip(grid, window))})
    return rearrange(x, f"{windows} -> {flat}", **sizes)


def shifted_window_mask(grid: tuple[int, ...], window: tuple[int, ...],
                        shift: tuple[int, ...]) -> torch.Tensor:
    """bool [nW, N, N] (True: may attend) for windows of a grid rolled back by ``shift``: in
    a window that wraps around, tokens from either side of the wrap do not see each other
    (Swin's mask: per axis the regions ``[0, g - w)``, ``[g - w, g - s)``, ``[g - s, g)``)."""
    labels = torch.zeros(grid, dtype=torch.long)  # [*grid]
    for axis, (g, w, s) in enumerate(zip(grid, window, shift)):
        if not s:
            continue
        index = torch.arange(g)
        region = (index >= g - w).long() + (index >= g - s).long()  # 0, 1, 2 along the axis
        labels = labels * 3 + region.view([g if a == axis else 1 for a in range(len(grid))])
    windows = to_windows(labels.reshape(1, -1, 1), grid, window)[..., 0]  # [nW, N]
    return windows[:, :, None] == windows[:, None, :]  # [nW, N, N]


class WindowBlock(Block):
    """``Block`` whose attention runs within non-overlapping windows of the token grid, the
    windows moved by ``shift`` (Swin's shifted windows: the grid rolled back by ``shift`` before
    attention and forward after, wrapped-around neighbours kept apart by
    ``shifted_window_mask``); x [B, prefix + L, dim] with the grid tokens in grid order.

    Prefix (cls) tokens take no part in windowed attention: they pass it unchanged and go
    through the MLP as the grid tokens do. No relative position bias (AudioMAE's Swin blocks
    have one): the decoder's tokens carry the sin-cos table, and the parameters are ``Block``'s,
    so weights move between the two. ``shift`` is 0 along an axis the window spans whole.
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, ...],
                 shift: tuple[int, ...] | None = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, eps: float = 1e-6):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop_path, eps)
        self.window = tuple(int(w) for w in window)
        self.shift = tuple(int(s) for s in shift) if shift is not None else (0,) * len(window)
        if len(self.shift) != len(self.window) or not all(
                0 <= s < w for s, w in zip(self.shift, self.window)):
            raise ValueError(f"model.decoder_window_shift: {list(self.shift)} must have one "
                             f"entry per window axis, each in [0, window) for {list(self.window)}")
        self._masks: dict[tuple, torch.Tensor] = {}

    def _mask(self, grid: tuple[int, ...], shift: tuple[int, ...], batch: int,
              device: torch.device) -> torch.Tensor:
        """bool [B * nW, 1, N, N] for the windows of ``to_windows``, cached per grid."""
        key = (grid, shift, device)
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(grid, self.window, shift).to(device)
        mask = self._masks[key]  # [nW, N, N]
        return mask.unsqueeze(0).expand(batch, -1, -1, -1).reshape(-1, 1, *mask.shape[1:])

    def forward(self, x: torch.Tensor, grid: tuple[int, ...] = (),  # type: ignore[override]
                num_prefix: int = 0) -> torch.Tensor:
        grid = tuple(grid)
        check_window(self.window, grid)
        # no shift along an axis one window spans (nothing to move across)
        shift = tuple(s if w < g else 0 for s, w, g in zip(self.shift, self.window, grid))
        prefix, tokens = x[:, :num_prefix], x[:, num_prefix:]  # [B, p, dim], [B, L, dim]
        batch, dim = tokens.shape[0], tokens.shape[-1]
        h = self.norm1(tokens)
        axes = tuple(range(1, len(grid) + 1))
        if any(shift):
            h = torch.roll(h.reshape(batch, *grid, dim), [-s for s in shift], axes)
            h = h.reshape(batch, -1, dim)  # [B, L, dim]
        mask = self._mask(grid, shift, batch, h.device) if any(shift) else None
        h = from_windows(self.attn(to_windows(h, grid, self.window), mask), grid, self.window)
        if any(shift):
            h = torch.roll(h.reshape(batch, *grid, dim), list(shift), axes)
            h = h.reshape(batch, -1, dim)  # [B, L, dim]
        x = torch.cat([prefix, tokens + self.drop_path(h)], dim=1)  # [B, p + L, dim]
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"window={list(self.window)}, shift={list(self.shift)}"
