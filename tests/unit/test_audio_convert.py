"""AudioMAE's own checkpoint format, built at random in its documented layout
(facebookresearch/AudioMAE ``models_mae.MaskedAutoencoderViT`` under a ``model`` key, MAE's
``args`` beside it): read as an audio ViT on its non-square grid, the local decoder's Swin
blocks said and left out."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mim.convert import read_weights


def sincos_flexible(dim: int, grid: tuple[int, int]) -> np.ndarray:
    """AudioMAE's 2D table for a (time, freq) grid, from MAE's definition: a meshgrid of
    (freq, time), the first half of the width on the freq coordinate, a zero cls row."""
    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    w, h = np.meshgrid(np.arange(grid[1]), np.arange(grid[0]))  # each [T, F]
    table = np.concatenate([one(dim // 2, w), one(dim // 2, h)], axis=1)  # [T*F, dim]
    return np.concatenate([np.zeros((1, dim)), table]).astype(np.float32)[None]


def _block(prefix: str, dim: int, swin: bool) -> dict[str, torch.Tensor]:
    r = lambda *s: torch.randn(*s) * 0.02  # noqa: E731
    out = {f"{prefix}norm1.weight": torch.ones(dim), f"{prefix}norm1.bias": torch.zeros(dim),
           f"{prefix}attn.qkv.weight": r(3 * dim, dim), f"{prefix}attn.qkv.bias": r(3 * dim),
           f"{prefix}attn.proj.weight": r(dim, dim), f"{prefix}attn.proj.bias": r(dim),
           f"{prefix}norm2.weight": torch.ones(dim), f"{prefix}norm2.bias": torch.zeros(dim),
           f"{prefix}mlp.fc1.weight": r(4 * dim, dim), f"{prefix}mlp.fc1.bias": r(4 * dim),
           f"{prefix}mlp.fc2.weight": r(dim, 4 * dim), f"{prefix}mlp.fc2.bias": r(dim)}
    if swin:  # timm's SwinTransformerBlock in AudioMAE's decoder_mode=1
        out[f"{prefix}attn.relative_position_bias_table"] = r(49, 4)
        out[f"{prefix}attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    return out


def audiomae_checkpoint(path: Path, dim: int = 192, depth: int = 2, frames: int = 256,
                        local_decoder: bool = True, image: bool = False) -> Path:
    """An AudioMAE pretraining checkpoint at random: 16 x 16 patches of [1, frames, 128];
    ``image``: facebookresearch/mae's own instead (RGB, 224 px: a 14 x 14 grid)."""
    torch.manual_seed(0)
    grid = (14, 14) if image else (frames // 16, 8)
    dec = 512  # ViT-Ti's and MAE's decoder widths: their head counts are known
    state = {"patch_embed.proj.weight": torch.randn(dim, 3 if image else 1, 16, 16) * 0.02,
             "patch_embed.proj.bias": torch.zeros(dim), "cls_token": torch.randn(1, 1, dim),
             "pos_embed": torch.from_numpy(sincos_flexible(dim, grid)),
             "norm.weight": torch.ones(dim), "norm.bias": torch.zeros(dim),
             "decoder_embed.weight": torch.randn(dec, dim) * 0.02,
             "decoder_embed.bias": torch.zeros(dec), "mask_token": torch.zeros(1, 1, dec),
             "decoder_pos_embed": torch.from_numpy(sincos_flexible(dec, grid)),
             "decoder_norm.weight": torch.ones(dec), "decoder_norm.bias": torch.zeros(dec),
             "decoder_pred.weight": torch.randn(256, dec) * 0.02,
             "decoder_pred.bias": torch.zeros(256)}
    for i in range(depth):
        state.update(_block(f"blocks.{i}.", dim, False))
        state.update(_block(f"decoder_blocks.{i}.", dec, local_decoder and not image))
    if image:
        state["decoder_pred.weight"] = torch.randn(768, dec) * 0.02  # 16 x 16 x 3 values
        state["decoder_pred.bias"] = torch.zeros(768)
    args = argparse.Namespace(model="mae_vit_base_patch16", input_size=224, mask_ratio=0.8,
                              norm_pix_loss=True, **({} if image else {
                                  "audio_exp": True, "target_length": frames}))
    torch.save({"model": state, "args": args, "epoch": 32}, path)
    return path


def test_an_audiomae_checkpoint_reads_on_its_grid(tmp_path: Path) -> None:
    conv = read_weights(audiomae_checkpoint(tmp_path / "ckpt.pth"))
    assert conv.in_chans == 1 and conv.input_size == (256, 128)  # a 16 x 8 grid, not 14 x 14
    assert conv.config.embed_dim == 192 and conv.config.cls_token
    assert not conv.has_decoder and any("AudioMAE's local decoder" in n for n in conv.notes)
    assert conv.run["config"]["mask"]["ratio"] == 0.8


def test_a_global_decoder_comes_along(tmp_path: Path) -> None:
    conv = read_weights(audiomae_checkpoint(tmp_path / "g.pth", local_decoder=False))
    assert conv.has_decoder and conv.config.decoder_embed_dim == 512
