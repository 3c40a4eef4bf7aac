"""Image model presets, registered with the image modality.

MAE (He et al. 2022): ViT-Ti/S/B/L/H at patch 16 or 14 with MAE's 8 x 512 decoder (Table 1a/1b).
Long-sequence MAE (Hu et al. 2022, Sec. 3): 448 px with patch 16 (L = 784), decoder half the
encoder's width with the encoder's number of heads. MCMAE / ConvMAE (Gao et al. 2022, Table 7):
``mcmae_{small,base,base_star,large,huge}``, conv stages 1-2 (``hybrid2d``, masked 5x5 depthwise
convs) at strides 4 and 8, then the ViT stage 3 at stride 16 with absolute sin-cos position
embeddings at its input and no cls token (Sec. 2.2), the multi-scale decoder (Eq. 1) and MAE's
8 x 512 decoder. B* is B with mlp ratio 8 in stages 1-2. Encoder sizes match MAE-S/B/L/H:
22 / 84 / 88 / 322 / 666 M parameters (stages 1-3, the multi-scale decoder's stride convs not
counted).
"""
from __future__ import annotations

from mim.models.factory import ModelConfig
from mim.registry import MODELS
from mim.models.sizes import MCMAE_SIZES, VIT_SIZES, mcmae_config


def _register_mae(size: str, patch: int) -> None:
    dim, depth, heads = VIT_SIZES[size]
    name = f"mae_vit_{size}_patch{patch}"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, patch_size=patch, embed_dim=dim, depth=depth,
                           num_heads=heads)

    preset.__doc__ = f"MAE ViT-{size} /{patch}, decoder 8 x 512 (MAE Table 1)."
    MODELS.register(name, obj=preset)


def _register_longseq(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    name = f"lsmae_vit_{size}_patch16"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, patch_size=16, embed_dim=dim, depth=depth,
                           num_heads=heads, decoder_embed_dim=dim // 2, decoder_num_heads=heads)

    preset.__doc__ = (f"Long-sequence MAE ViT-{size}/16 (use at 448 px with a 2x2 mask unit; "
                      "decoder half the encoder width, encoder heads).")
    MODELS.register(name, obj=preset)


def _register_mcmae(size: str) -> None:
    name = f"mcmae_{size}"

    def preset() -> ModelConfig:
        return mcmae_config(size, name)

    preset.__doc__ = f"MCMAE-{size} (Table 7): hybrid conv-ViT encoder, multi-scale decoder."
    MODELS.register(name, obj=preset)


for _size in VIT_SIZES:
    for _patch in (16, 14):
        _register_mae(_size, _patch)
for _size in ("base", "large"):
    _register_longseq(_size)
for _size in MCMAE_SIZES:
    _register_mcmae(_size)
