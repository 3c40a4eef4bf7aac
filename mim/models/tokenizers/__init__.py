"""Tokenizers: input tensor -> tokens on a grid (contract in ``base.py``)."""
from mim.models.tokenizers.base import Tokenizer, Tokens, gather_tokens, visible_ids
from mim.models.tokenizers.hybrid import Hybrid2dTokenizer, Hybrid3dTokenizer, HybridTokenizer
from mim.models.tokenizers.patch import CubeTokenizer, Patch2dTokenizer, PatchTokenizer

__all__ = ["Tokenizer", "Tokens", "PatchTokenizer", "Patch2dTokenizer", "CubeTokenizer",
           "HybridTokenizer", "Hybrid2dTokenizer", "Hybrid3dTokenizer", "gather_tokens",
           "visible_ids"]
