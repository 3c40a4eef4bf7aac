"""Volume model presets, registered with the volume modality.

MCMAE for 3D volumes: the hybrid encoder of Gao et al. 2022 (Table 7, small) with masked 3D
convolutions and isotropic strides 4, 2, 2 along every axis, so stage 3 sees 16x16x16 cubes as the
plain ``mae3d_vit_*_patch16`` presets do. 5x5x5 depthwise kernels, MAE's decoder.
"""
from __future__ import annotations

from mim.hybrid_presets import mcmae_config
from mim.models import ModelConfig
from mim.registry import MODELS


def mcmae3d_small() -> ModelConfig:
    """MCMAE-S on volumes: 16^3 stage-3 cubes reached by strides 4, 2, 2 on every axis."""
    return mcmae_config("small", "mcmae3d_small_patch16", tokenizer="hybrid3d", tubelet_size=16,
                        hybrid_time_strides=[4, 2, 2])


MODELS.register("mcmae3d_small_patch16", obj=mcmae3d_small)
