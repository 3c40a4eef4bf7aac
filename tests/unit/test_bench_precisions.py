"""Which precisions the benchmark steps are timed in (``bench.harness.precisions``)."""
from __future__ import annotations

import pytest
import torch

from bench.harness import precisions
from mim.engine import precision

CPU = torch.device("cpu")


def test_bf16_is_left_out_with_the_reason_where_it_is_emulated(monkeypatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: (False, "the CPU has no bf16"))
    chosen, note = precisions(CPU, quick=False, asked=None)
    assert chosen == ("fp32",)
    assert "the CPU has no bf16" in note and "--precisions fp32,bf16" in note


def test_both_where_bf16_is_native_or_the_run_is_quick(monkeypatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: (True, "the CPU has amx_bf16"))
    assert precisions(CPU, quick=False, asked=None) == (("fp32", "bf16"), "")
    monkeypatch.setattr(precision, "native_bf16", lambda device: (False, "none"))
    assert precisions(CPU, quick=True, asked=None) == (("fp32", "bf16"), "")  # tiny: seconds


def test_asked_precisions_win_and_bad_ones_are_named() -> None:
    assert precisions(CPU, quick=False, asked="bf16") == (("bf16",), "")
    assert precisions(CPU, quick=False, asked="fp32,fp16") == (("fp32", "fp16"), "")
    with pytest.raises(ValueError, match="--precisions: 'fp8' is not one of: fp32, bf16, fp16"):
        precisions(CPU, quick=False, asked="fp32,fp8")
