"""Seeding of the global random generators (Python, NumPy, torch) before a model is built:
``mim train`` seeds with the run's seed and ``mim eval eval.init=random`` with the same one, so
both build the same initial weights."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32-bit seeds only
    torch.manual_seed(seed)
