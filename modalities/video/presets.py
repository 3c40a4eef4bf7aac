"""Space-time model presets, registered with the video modality.

VideoMAE (Tong et al. 2022): ViT on 2x16x16 cubes, 16 frames at 224, tube masking at 0.9, a
4-block decoder of width 192 / 384 / 512 for S / B / L, no cls token, and VideoMAE's position
table, the Transformer's 1D sin-cos over the flattened (t, h, w) token index (``pos_embed=flat``,
encoder and decoder), so a run exports to Hugging Face's VideoMAE. MAE-ST (Feichtenhofer et
al. 2022): separable space/time position embeddings, a 4 x 512 decoder, random space-time
masking at 0.9. VideoMCMAE (Gao et al. 2022, Sec. 2.4): MCMAE-B whose stage 1 embeds 2x4x4 cubes,
masked 3D convs in stages 1-2 (time not downsampled further), space-time sin-cos at stage 3, the
multi-scale decoder and a space-time transformer decoder; tube masking at 0.9 (the modality's
default mask).
"""
from __future__ import annotations

from mim.models.factory import ModelConfig
from mim.registry import MODELS
from mim.models.sizes import VIT_SIZES, mcmae_config

_DECODER = {"small": (192, 3), "base": (384, 6), "large": (512, 8)}  # width, heads


def _register_videomae(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    dec_dim, dec_heads = _DECODER[size]
    name = f"videomae_vit_{size}_patch16_16x224"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, tokenizer="cube", patch_size=16, tubelet_size=2,
                           embed_dim=dim, depth=depth, num_heads=heads,
                           decoder_embed_dim=dec_dim, decoder_depth=4,
                           decoder_num_heads=dec_heads, cls_token=False, pos_embed="flat")

    preset.__doc__ = (f"VideoMAE ViT-{size} on 2x16x16 cubes, 4-block decoder, VideoMAE's 1D "
                      "sin-cos table over the flattened (t, h, w) index.")
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


def videomcmae_base() -> ModelConfig:
    """VideoMCMAE-B: MCMAE-B (Table 7) on 2x16x16 stage-3 cubes, VideoMAE-B's 4 x 384 decoder."""
    dec_dim, dec_heads = _DECODER["base"]
    return mcmae_config("base", "videomcmae_base_patch16_16x224", tokenizer="hybrid3d",
                        tubelet_size=2, decoder_embed_dim=dec_dim, decoder_depth=4,
                        decoder_num_heads=dec_heads)


MODELS.register("videomcmae_base_patch16_16x224", obj=videomcmae_base)
