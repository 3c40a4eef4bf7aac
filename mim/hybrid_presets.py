"""MCMAE / ConvMAE presets (Gao et al. 2022, Table 7): ``mcmae_{small,base,base_star,large,huge}``.

A hybrid encoder: conv stages 1-2 (``hybrid2d`` tokenizer, masked 5x5 depthwise convs) at strides
4 and 8, then the ViT stage 3 at stride 16, with absolute sin-cos position embeddings at the
stage-3 input and no cls token (Sec. 2.2), the multi-scale decoder (Eq. 1, the paper's default
in Sec. 3) and MAE's 8 x 512 decoder. B* is B with mlp ratio 8 in stages 1-2. Encoder sizes match
MAE-S/B/L/H: 22 / 84 / 88 / 322 / 666 M parameters (stages 1-3, the multi-scale decoder's
stride convs not counted). The video and volume presets live in their modality packages.
"""
from __future__ import annotations

from mim.models import ModelConfig
from mim.registry import MODELS

# size: ([C1, C2, C3], [L1, L2, L3], [P1, P2, P3] mlp ratios, stage-3 heads), Table 7
MCMAE_SIZES = {
    "small": ([128, 256, 384], [2, 2, 11], [4.0, 4.0, 4.0], 6),
    "base": ([256, 384, 768], [2, 2, 11], [4.0, 4.0, 4.0], 12),
    "base_star": ([256, 384, 768], [2, 2, 11], [8.0, 8.0, 4.0], 12),
    "large": ([384, 768, 1024], [2, 2, 23], [8.0, 8.0, 4.0], 16),
    "huge": ([768, 1024, 1280], [2, 2, 31], [8.0, 8.0, 4.0], 16),
}


def mcmae_config(size: str, name: str, **fields) -> ModelConfig:
    """The Table 7 encoder of ``size`` at patch 16 (strides 4, 2, 2); ``fields`` add or change
    anything else (the tokenizer, the decoder, a cube depth)."""
    dims, depths, ratios, heads = MCMAE_SIZES[size]
    base = dict(tokenizer="hybrid2d", patch_size=16, embed_dim=dims[2], depth=depths[2],
                num_heads=heads, mlp_ratio=ratios[2], hybrid_dims=dims[:2],
                hybrid_depths=depths[:2], hybrid_mlp_ratios=ratios[:2], cls_token=False)
    return ModelConfig(name=name, **{**base, **fields})


def _register(size: str) -> None:
    name = f"mcmae_{size}"

    def preset() -> ModelConfig:
        return mcmae_config(size, name)

    preset.__doc__ = f"MCMAE-{size} (Table 7): hybrid conv-ViT encoder, multi-scale decoder."
    MODELS.register(name, obj=preset)


for _size in MCMAE_SIZES:
    _register(_size)
