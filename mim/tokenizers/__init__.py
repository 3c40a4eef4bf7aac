"""Tokenizers: input tensor -> tokens on a grid (contract in ``base.py``)."""
from mim.tokenizers.base import Tokenizer, gather_tokens, visible_ids
from mim.tokenizers.patch import CubeTokenizer, Patch2dTokenizer, PatchTokenizer

__all__ = ["Tokenizer", "PatchTokenizer", "Patch2dTokenizer", "CubeTokenizer",
           "gather_tokens", "visible_ids"]
