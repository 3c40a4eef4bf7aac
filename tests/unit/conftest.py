"""Shared settings for the fast unit tests: small, derandomised hypothesis runs, one thread."""
from __future__ import annotations

import mim  # noqa: F401  (installs the torchvision shim before anything imports timm)
import torch
from hypothesis import settings

# Derandomised so that two runs of the suite test the same examples (reproducible in CI);
# no example database, so nothing is written into the repository.
settings.register_profile("mim-unit", max_examples=20, deadline=None, derandomize=True,
                          database=None, print_blob=True)
settings.load_profile("mim-unit")

# The machine has 2 cores shared with other jobs; tiny models gain nothing from more threads.
torch.set_num_threads(1)
