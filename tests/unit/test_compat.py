"""The environment install.sh makes imports timm, torchvision and transformers on its own
(without ``import mim`` first), whichever torchvision build pip chose next to torch."""
from __future__ import annotations

import subprocess
import sys


def test_timm_torchvision_and_transformers_import_without_mim() -> None:
    # here: the CUDA torchvision wheel next to the CPU torch, fixed by install.sh's .pth line
    run = subprocess.run([sys.executable, "-c", "import timm, torchvision, transformers; "
                          "import sys; print('mim' in sys.modules)"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"  # no help from mim's own import


def test_the_startup_line_waits_for_torchvision() -> None:
    # every interpreter of the environment runs the .pth line: it must not import torch itself
    run = subprocess.run([sys.executable, "-c", "import sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "False"
