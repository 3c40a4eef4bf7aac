"""The state-dict key names of ``MaskedAutoencoder`` that code outside the model reads: the
converters, ``model.init``, the transfer code and the model card. A leaf: imports nothing.

mim's names are the reference layout (``mim/convert/common.py`` describes it): the patch or
cube convolution ``tokenizer.proj``, ``cls_token`` [1, 1, D], a learned position table
``learned_pos_embed.table`` [L, D], timm's block parts, and the decoder.
"""
from __future__ import annotations

KERNEL = "tokenizer.proj.weight"  # the patch (cube) convolution: [D, C, (t,) p, p]
KERNEL_BIAS = "tokenizer.proj.bias"
CLS = "cls_token"
TABLE = "learned_pos_embed.table"  # only with model.pos_embed=learned
MASK_TOKEN = "mask_token"
# where the decoder's parameters live; every other name (tokenizer, cls_token,
# learned_pos_embed, blocks, norm) is the encoder, which evaluation and export keep
DECODER_PREFIXES = ("decoder", MASK_TOKEN)
# the decoder's tensors outside its blocks (MAE's and ViTMAE's names for them are mim's)
DECODER_TENSORS = ("decoder_embed.weight", "decoder_embed.bias", MASK_TOKEN,
                   "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight",
                   "decoder_pred.bias")
# one transformer block's tensors, timm's names (fused q/k/v)
BLOCK_PARTS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
               "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
               "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
