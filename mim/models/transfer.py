"""Transfer of pretrained weights to another input size, number of frames or patch size.

Position embeddings: mim's fixed sin-cos tables are computed for whatever grid the input has
(MAE's and the long-sequence MAE paper's 2D layout, in space and time), and a learned table is
resized on use (bicubic in 2D, trilinear in space-time: ``LearnedPosEmbed``), so a new input size
or frame count needs nothing here. A new patch (or tubelet) size changes the patch-embedding
kernel: it is resized as a filter, bicubic in space and linear in time (long-sequence MAE,
Hu et al. 2022, Sec. 4: "the weights are treated as 2D convolution filters and
bicubic-interpolated"), or with FlexiViT's pseudo-inverse of that resize (Beyer et al. 2023),
which keeps each token equal for an input resized by the same factor. A 2D kernel meets a 3D
(video) model by inflation over the tubelet (Carreira and Zisserman 2017, I3D): the kernel repeated
over time and divided by the tubelet, so a clip of repeated frames gives the image's token; and a
2D table fills a learned 3D one as the spatial table shared across time (``fit_pos_table``).
Both pretraining's ``model.init`` (``mim/init.py``) and evaluation use these functions.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from einops import repeat

from mim.models.keys import KERNEL
from mim.convert import Converted
from mim.models.factory import ModelConfig, build_model
from mim.models.model import is_decoder
from mim.models.pos_embed import POS_EMBEDS, interpolate_pos_embed

log = logging.getLogger("mim")


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Filters [N, *k] -> [N, *size]: bicubic over the last two axes, then linear over a
    leading (time) axis."""
    if tuple(x.shape[-2:]) != tuple(size[-2:]):
        lead = x.shape[:-2]
        flat = x.reshape(-1, 1, *x.shape[-2:]).double()  # [N', 1, kh, kw]
        flat = F.interpolate(flat, size=tuple(size[-2:]), mode="bicubic", align_corners=False)
        x = flat.reshape(*lead, *size[-2:])  # [N, (kt,) h, w]
    if x.dim() == 4 and x.shape[1] != size[0]:  # [N, kt, h, w]: linear in time
        moved = x.permute(0, 2, 3, 1).reshape(-1, 1, x.shape[1]).double()  # [N h w, 1, kt]
        moved = F.interpolate(moved, size=size[0], mode="linear", align_corners=False)
        x = moved.reshape(x.shape[0], *size[-2:], size[0]).permute(0, 3, 1, 2)  # [N, t, h, w]
    return x


def resize_patch_kernel(weight: torch.Tensor, size: tuple[int, ...],
                        method: str = "bicubic") -> torch.Tensor:
    """A patch-embedding kernel [D, C, *k] -> [D, C, *size].

    ``bicubic``: the kernel resized as a filter. ``pinv``: the kernel w' with <R x, w'> = <x, w>
    for every patch x, in the least-squares sense, where R is the same bicubic resize of the
    input patch (FlexiViT): tokens of an input resized by size / k stay the same.
    """
    old = tuple(weight.shape[2:])
    size = tuple(int(s) for s in size)
    if old == size:
        return weight
    dim, chans = weight.shape[:2]
    flat = weight.reshape(dim * chans, *old).double()  # [D C, *k]
    if method == "bicubic":
        out = _resize(flat, size)
    elif method == "pinv":
        n_old = torch.Size(old).numel()
        basis = torch.eye(n_old, dtype=torch.float64).reshape(n_old, *old)  # one-hot patches
        resize = _resize(basis, size).reshape(n_old, -1).T  # R: [n_new, n_old]
        out = flat.reshape(dim * chans, n_old) @ torch.linalg.pinv(resize)  # [D C, n_new]
    else:
        raise ValueError(f"eval.kernel_resize: '{method}' is not one of: bicubic, pinv")
    return out.reshape(dim, chans, *size).to(weight.dtype)  # [D, C, *size]


def inflate_patch_kernel(weight: torch.Tensor, tubelet: int) -> torch.Tensor:
    """A 2D kernel [D, C, h, w] -> [D, C, tubelet, h, w]: each time slice is the kernel divided
    by the tubelet, so a cube of ``tubelet`` equal frames embeds as the image does."""
    return repeat(weight, "d c h w -> d c t h w", t=tubelet) / tubelet


def fit_patch_kernel(weight: torch.Tensor, size: tuple[int, ...],
                     method: str = "bicubic") -> torch.Tensor:
    """A patch kernel [D, C, *k] made to fit [D, C, *size]: a 2D kernel into a 3D ``size`` is
    resized in space, then inflated over time; otherwise ``resize_patch_kernel``."""
    size = tuple(int(s) for s in size)
    if tuple(weight.shape[2:]) == size:
        return weight
    log.info("transfer: patch kernel %s -> %s (%s%s)", tuple(weight.shape[2:]), size, method,
             ", inflated over time" if weight.dim() == 4 and len(size) == 3 else "")
    if weight.dim() == 4 and len(size) == 3:  # image -> video
        return inflate_patch_kernel(resize_patch_kernel(weight, size[1:], method), size[0])
    return resize_patch_kernel(weight, size, method)


def fit_pos_table(kind: str, table: torch.Tensor | None, grid: tuple[int, ...] | None,
                  rank: int, target: tuple[int, ...], dim: int) -> torch.Tensor:
    """The encoder table [L, dim] on grid ``target`` for a learned-table model, from the
    weights' position embedding of grid rank ``rank``: their learned ``table`` on ``grid``, or
    the fixed table ``kind`` (computed, not stored). A 2D table for a 3D ``target`` is the
    spatial table on ``target[1:]`` repeated over time (spatial positions shared across time).
    ValueError for a table of higher rank than ``target``."""
    target = tuple(int(n) for n in target)
    space = target[1:] if rank == 2 and len(target) == 3 else target
    if len(space) != rank:
        raise ValueError(f"a {rank}D position table cannot serve the {len(target)}D grid "
                         f"{list(target)}")
    if table is None:
        out = POS_EMBEDS[kind](dim, space)  # [L_space, dim]
    else:
        grid = tuple(int(n) for n in grid)
        out = table if grid == space else interpolate_pos_embed(table, grid, space)
    if space == target:
        return out
    return repeat(out, "l d -> (t l) d", t=target[0])  # [t h w, dim]: 'l' is (h w)


def build_encoder(cfg: ModelConfig, in_chans: int, weights: Converted | None,
                  kernel_method: str = "bicubic", nodata: bool = False) -> torch.nn.Module:
    """A MaskedAutoencoder of architecture ``cfg`` holding ``weights`` adapted to it (None:
    MAE's random initialisation). Decoder weights whose shape no longer fits are left out (an
    evaluation uses the encoder only). ``nodata``: inputs hold NaN for no data."""
    model = build_model(cfg, in_chans, nodata)
    if weights is None:
        return model
    state = dict(weights.state)
    own = model.state_dict()
    if KERNEL in state and KERNEL in own:  # the model's own kernel size (its tokenizer's)
        state[KERNEL] = fit_patch_kernel(state[KERNEL], tuple(own[KERNEL].shape[2:]),
                                         kernel_method)
    decoder_misfit = [k for k in state if is_decoder(k) and k in own
                      and own[k].shape != state[k].shape]
    for k in decoder_misfit:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not is_decoder(k)]
    if missing or unexpected:
        raise ValueError(f"the weights do not fit model {cfg.name}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (an architecture key such as "
                         "model.depth or model.embed_dim was changed?)")
    return model
