"""Audio model presets, registered with the audio modality.

AudioMAE (Huang et al. 2022, arXiv 2207.06405, Sec. 3 and 4.1): a ViT on 16 x 16 patches of a
[1, 1024 frames, 128 mel] filterbank, a 64 x 8 (time x frequency) grid of 512 tokens, a cls
token, sin-cos positions, 80 % random masking in pretraining, and a 16-block decoder of width
512 with 16 heads. ``audiomae_vit_{small,base,large}_patch16_1024x128`` take the ViT-S/B/L
encoders (MAE's sizes); ``audiomae_vit_tiny_patch16`` is for demos: ViT-Ti with a 4 x 128
decoder. Every decoder attends within 4 x 4 windows of the grid, shifted in alternate blocks
(AudioMAE's local decoder; ``model.decoder_window=null`` gives the global one), so the grid's
time axis must be a multiple of 4 (``data.num_frames`` a multiple of 64). The grid comes from
the data (``data.num_frames``, ``data.num_mel_bins``): the names say the recipe's input; a run
on 5.12 s clips uses the same preset with a 32 x 8 grid.
"""
from __future__ import annotations

from mim.models.factory import ModelConfig
from mim.registry import MODELS
from mim.models.sizes import VIT_SIZES


# AudioMAE's local decoder (its models_mae.py): 4 x 4 windows of the time x frequency grid,
# every odd block's windows moved 2 steps along time
LOCAL_DECODER = {"decoder_window": [4, 4], "decoder_window_shift": [2, 0]}


def _register_audiomae(size: str) -> None:
    dim, depth, heads = VIT_SIZES[size]
    name = f"audiomae_vit_{size}_patch16_1024x128"

    def preset() -> ModelConfig:
        return ModelConfig(name=name, patch_size=16, embed_dim=dim, depth=depth,
                           num_heads=heads, decoder_embed_dim=512, decoder_depth=16,
                           decoder_num_heads=16, **LOCAL_DECODER)

    preset.__doc__ = (f"AudioMAE ViT-{size}/16 on 1024 x 128 filterbanks (64 x 8 tokens), "
                      "decoder 16 x 512.")
    MODELS.register(name, obj=preset)


for _size in ("small", "base", "large"):
    _register_audiomae(_size)


def audiomae_tiny() -> ModelConfig:
    """AudioMAE's recipe at demo size: ViT-Ti/16, decoder 4 x 128."""
    dim, depth, heads = VIT_SIZES["tiny"]
    return ModelConfig(name="audiomae_vit_tiny_patch16", patch_size=16, embed_dim=dim,
                       depth=depth, num_heads=heads, decoder_embed_dim=128, decoder_depth=4,
                       decoder_num_heads=4, **LOCAL_DECODER)


MODELS.register("audiomae_vit_tiny_patch16", obj=audiomae_tiny)
