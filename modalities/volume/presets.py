"""Volume model presets, registered with the volume modality.

``mae3d_vit_{tiny,small,base}_patch16``: ViT on 16x16x16 cubes with MAE's 8 x 512 decoder.
MCMAE for 3D volumes: the hybrid encoder of Gao et al. 2022 (Table 7, small) with masked 3D
convolutions and isotropic strides 4, 2, 2 along every axis, so stage 3 sees 16x16x16 cubes as the
plain ``mae3d_vit_*_patch16`` presets do. 5x5x5 depthwise kernels, MAE's decoder.
"""
from __future__ import annotations

from mim.models.factory import ModelConfig
from mim.registry import MODELS
from mim.models.sizes import VIT_SIZES, mcmae_config


def _register_mae3d(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    name = f"mae3d_vit_{size}_patch16"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, tokenizer="cube", patch_size=16, tubelet_size=16,
                           embed_dim=dim, depth=depth, num_heads=heads)

    preset.__doc__ = f"ViT-{size} on 16x16x16 cubes for 3D volumes, MAE's decoder."
    MODELS.register(name, obj=preset)


for _size in ("tiny", "small", "base"):
    _register_mae3d(_size)


def mcmae3d_small() -> ModelConfig:
    """MCMAE-S on volumes: 16^3 stage-3 cubes reached by strides 4, 2, 2 on every axis."""
    return mcmae_config("small", "mcmae3d_small_patch16", tokenizer="hybrid3d", tubelet_size=16,
                        stages={"time_strides": [4, 2, 2]})


MODELS.register("mcmae3d_small_patch16", obj=mcmae3d_small)
