"""Encoder size tables that the modality presets build on, shared because they are the papers'.

ViT-Ti/S/B/L/H (Dosovitskiy et al., the sizes MAE uses) and MCMAE's hybrid conv-ViT encoder
(Gao et al. 2022, Table 7) with ``mcmae_config``. The presets themselves (named, registered
configs) live in the modality packages' ``presets.py``; these tables sit in the core because the
image, video and volume presets all use them and one modality never imports another.
"""
from __future__ import annotations

from mim.models.factory import ModelConfig

# (embed_dim, depth, num_heads): ViT-Ti/S/B/L/H
VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
             "large": (1024, 24, 16), "huge": (1280, 32, 16)}

# size: ([C1, C2, C3], [L1, L2, L3], [P1, P2, P3] mlp ratios, stage-3 heads), Table 7
MCMAE_SIZES = {
    "small": ([128, 256, 384], [2, 2, 11], [4.0, 4.0, 4.0], 6),
    "base": ([256, 384, 768], [2, 2, 11], [4.0, 4.0, 4.0], 12),
    "base_star": ([256, 384, 768], [2, 2, 11], [8.0, 8.0, 4.0], 12),
    "large": ([384, 768, 1024], [2, 2, 23], [8.0, 8.0, 4.0], 16),
    "huge": ([768, 1024, 1280], [2, 2, 31], [8.0, 8.0, 4.0], 16),
}


def mcmae_config(size: str, name: str, tokenizer: str = "hybrid2d",
                 stages: dict | None = None, **fields) -> ModelConfig:
    """The Table 7 encoder of ``size`` at patch 16 (strides 4, 2, 2) with the ``tokenizer``
    (hybrid2d, hybrid3d); ``stages``: more of its parameters (``time_strides``); ``fields`` add
    or change anything else (the decoder, a cube depth)."""
    dims, depths, ratios, heads = MCMAE_SIZES[size]
    conv = dict(name=tokenizer, dims=dims[:2], depths=depths[:2], mlp_ratios=ratios[:2],
                **(stages or {}))
    base = dict(tokenizer=conv, patch_size=16, embed_dim=dims[2], depth=depths[2],
                num_heads=heads, mlp_ratio=ratios[2], cls_token=False)
    return ModelConfig(name=name, **{**base, **fields})
