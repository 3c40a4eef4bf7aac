"""Models: the masked autoencoder and what builds it.

- ``model.py``: ``MaskedAutoencoder`` (tokenize -> mask -> encode -> decode -> loss);
- ``blocks.py``: transformer blocks; ``pos_embed.py``: position tables;
- ``tokenizers/``: the ``Tokenizer`` contract, patch2d, cube, hybrid (MCMAE);
- ``factory.py``: ``ModelConfig``, presets by name, ``create_model``; ``sizes.py``: the papers'
  encoder size tables the presets use;
- ``keys.py``: the state-dict key names; ``transfer.py``: fitting weights to an encoder (pretraining's
  ``model.init``, evaluation, pictures).
"""
