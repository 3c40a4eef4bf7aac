"""Data: what a modality's dataset implements and how samples reach the model.

- ``dataset.py``: the ``MimDataset`` contract, ``Sample`` / ``Batch``, seeds, the epoch sampler
  and the collate that draws masks (its names are re-exported here: ``from mim.data import
  MimDataset`` is the path plugins use);
- ``failures.py``: unreadable files, skipped and counted;
- ``stream.py``: the sources of a run mixed into one stream, and its position for a resume;
- ``files.py``: finding a folder's files; ``labelled.py``: labelled folders for evaluation;
- ``shards.py`` / ``pack.py``: WebDataset-style tar shards, read and written;
- ``resolution.py``: progressive resolution (the input size of each stage).
"""
from mim.data.dataset import (LOAD_ERRORS, Batch, MaskingCollate, MimDataset, Sample,
                              SeededView, Skipped, StreamSampler, UnreadableSample,
                              items_per_epoch, sample_seed)

__all__ = ["LOAD_ERRORS", "Batch", "MaskingCollate", "MimDataset", "Sample", "SeededView",
           "Skipped", "StreamSampler", "UnreadableSample", "items_per_epoch", "sample_seed"]
