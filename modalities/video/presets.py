"""Space-time model presets, registered with the video modality.

VideoMAE (Tong et al. 2022): ViT on 2x16x16 cubes, 16 frames at 224, tube masking at 0.9, a
4-block decoder of width 192 / 384 / 512 for S / B / L, no cls token. MAE-ST (Feichtenhofer et
al. 2022): separable space/time position embeddings, a 4 x 512 decoder, random space-time
masking at 0.9.
"""
from __future__ import annotations

from mim.models import VIT_SIZES, ModelConfig
from mim.registry import MODELS

_DECODER = {"small": (192, 3), "base": (384, 6), "large": (512, 8)}  # width, heads


def _register_videomae(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    dec_dim, dec_heads = _DECODER[size]
    name = f"videomae_vit_{size}_patch16_16x224"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, tokenizer="cube", patch_size=16, tubelet_size=2,
                           embed_dim=dim, depth=depth, num_heads=heads,
                           decoder_embed_dim=dec_dim, decoder_depth=4,
                           decoder_num_heads=dec_heads, cls_token=False)

    preset.__doc__ = f"VideoMAE ViT-{size} on 2x16x16 cubes, 4-block decoder."
    MODELS.register(name, obj=preset)


def _register_maest(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    name = f"maest_vit_{size}_patch16_16x224"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, tokenizer="cube", patch_size=16, tubelet_size=2,
                           embed_dim=dim, depth=depth, num_heads=heads, decoder_embed_dim=512,
                           decoder_depth=4, decoder_num_heads=16, pos_embed="separable")

    preset.__doc__ = f"MAE-ST ViT-{size} on 2x16x16 cubes, separable position embeddings."
    MODELS.register(name, obj=preset)


for _size in _DECODER:
    _register_videomae(_size)
for _size in ("base", "large"):
    _register_maest(_size)
