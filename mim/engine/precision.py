"""``train.precision``: fp32, bf16 autocast, fp16 autocast with dynamic loss scaling, or
``auto``, the default: bf16 where the device computes it natively, fp32 elsewhere.

Mixed precision is how the anchors pretrain (MAE and VideoMAE run fp16 autocast on every GPU);
bf16 needs no loss scaling; fp16 is for GPUs without native bf16 (V100, T4) and needs a dynamic
loss scale (``mim/engine/scaler.py``; DeepSpeed's own under ``backend=deepspeed``). ``auto``
never picks fp16: a scale that must find its level is a choice to make knowingly. Where bf16 is
only emulated it is slower than fp32, so ``auto`` asks the hardware: a CUDA device of compute
capability 8.0 or newer, a CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm), a TPU.
Weights, optimiser state and checkpoints stay fp32 in every case; only the arithmetic of the
forward and backward passes changes.

``MIM_NATIVE_BF16=1`` or ``0`` overrides what the CPU reports (CUDA devices and TPUs are always
asked): the test suite sets it so that both ``auto`` paths run, and give the same outcome, on
any CPU; a user can set it to try the other default on their own machine.

These are the rules; a backend applies them to its device (``Backend.precision``, ``autocast``
in ``mim/engine/backends/base.py``), and the schema and the benchmarks read them too.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the autocast dtype of each
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (Zen 4, Sapphire Rapids), Arm
OVERRIDE = "MIM_NATIVE_BF16"  # 1: treat the CPU as computing bf16 natively, 0: as not


@functools.lru_cache(maxsize=None)
def cpu_bf16_flag() -> str | None:
    """The CPU feature flag that gives native bf16 arithmetic, or None (or not Linux)."""
    try:
        return bf16_flag_in(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def bf16_flag_in(cpuinfo: str) -> str | None:
    """The first native-bf16 flag in the text of ``/proc/cpuinfo``, or None."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / Arm
            flags = set(value.split())
            return next((flag for flag in _CPU_BF16_FLAGS if flag in flags), None)
    return None


def cpu_override() -> bool | None:
    """``MIM_NATIVE_BF16`` as a bool, or None where it is unset or empty."""
    value = os.environ.get(OVERRIDE, "").strip()
    if not value:
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{OVERRIDE}: '{value}' is not one of: 0, 1 (or unset: ask the CPU)")
    return value == "1"


def cpu_native_bf16() -> bool:
    """Whether ``train.precision=auto`` picks bf16 on this CPU (the override, else the flag)."""
    forced = cpu_override()
    return forced if forced is not None else cpu_bf16_flag() is not None


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (for the log)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"CUDA compute capability {major}.{minor}"
    if device.type == "cpu":
        forced = cpu_override()
        if forced is not None:
            return forced, f"{OVERRIDE}={int(forced)}"
        flag = cpu_bf16_flag()
        return flag is not None, (f"the CPU has {flag}" if flag else
                                  "the CPU has no native bf16 (avx512_bf16, amx_bf16 or bf16)")
    return False, f"device type {device.type}"


def resolve(precision: str, native: tuple[bool, str]) -> tuple[str, str]:
    """``(fp32 | bf16 | fp16, how it was chosen)`` for a ``train.precision`` value."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: '{precision}' is not one of: {', '.join(PRECISIONS)}")
    if precision == "fp16":  # --cfg and train.log say that the scale comes with it
        return precision, "train.precision=fp16, with dynamic loss scaling"
    if precision != "auto":
        return precision, f"train.precision={precision}"
    yes, why = native
    return ("bf16" if yes else "fp32"), f"train.precision=auto: {why}"


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Flush subnormal floats (below 1.2e-38) to zero on the CPU while training, as TensorFlow
    does on CPUs and TPUs always do; the previous mode is restored on exit. Training never needs
    them and x86 cores handle them slowly: in the ViT-B bf16 step, the casts of the weight
    gradients of the early encoder blocks, which hold many, took 24-43 ms each instead of 3-4
    (``bench/RESULTS.md``). No effect on GPU arithmetic."""
    was = _flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


def _flushing() -> bool:
    return float(torch.tensor([1e-39]) * 1.0) == 0.0  # a subnormal float32 survives, or not
