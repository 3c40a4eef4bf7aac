"""fp16's dynamic loss scale (``train.precision=fp16``): torch's for the plain-PyTorch step,
and backend=deepspeed's ``fp16`` section set to match.

float16 holds numbers up to 65504 and loses gradients below ~6e-8, so the loss is multiplied
by a large scale before backward (small gradients survive) and the gradients divided by it
before the optimiser step. The scale is dynamic, torch's ``torch.amp.GradScaler``: a step whose
gradients overflow (Inf or NaN) is skipped and the scale halved; after ``growth_interval`` clean
steps in a row it doubles. MAE and VideoMAE pretrain this way on V100-class GPUs.

How it meets ``train.nonfinite``: an overflowing *gradient* under fp16 is the scaler's business
(the step is skipped, the scale lowered and the step counted in ``overflow_steps``), never a
non-finite-loss stop, because overflows are how the dynamic scale finds its level and happen by
design. A non-finite *loss* is not the scale's fault (the loss is computed before scaling), so
the loop still applies ``train.nonfinite`` to it.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from mim.config.errors import ConfigError

INIT_SCALE, GROWTH_INTERVAL = 2.0**16, 2000  # torch's GradScaler defaults, MAE's too
# DeepSpeed's dynamic scale (backend=deepspeed) set as ours: 2^16, halved on the first overflow
# (hysteresis 1, where DeepSpeed's default waits for a second), doubled after GROWTH_INTERVAL
DEEPSPEED_FP16 = {"loss_scale": 0, "initial_scale_power": int(math.log2(INIT_SCALE)),
                  "hysteresis": 1, "loss_scale_window": GROWTH_INTERVAL, "min_loss_scale": 1}


class LossScaling:
    """A ``GradScaler`` on ``device`` with the count of the steps it skipped (on the device: no
    host read until ``metrics``); its state rides in the checkpoint, so a resume continues with
    the same scale and growth counter, bit for bit."""

    def __init__(self, device: torch.device, init_scale: float = INIT_SCALE,
                 growth_interval: int = GROWTH_INTERVAL):
        self.scaler = torch.amp.GradScaler(device.type, init_scale=init_scale,
                                           growth_interval=growth_interval)
        self.overflows = torch.zeros((), dtype=torch.int64, device=device)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current scale (what backward runs on)."""
        return self.scaler.scale(loss)

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor],
             clip_grad: float | None) -> None:
        """Unscale (and clip) the gradients, step unless they overflowed, update the scale."""
        if clip_grad:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        # torch keeps the scale as a device tensor but offers only get_scale(), a host read;
        # the scale falls exactly when a step overflowed (backoff), so comparing it before and
        # after on the device counts the skipped steps without another read
        before = self.scaler._scale.clone()
        self.scaler.step(optimizer)  # skips optimizer.step when a gradient is Inf or NaN
        self.scaler.update()
        self.overflows += (self.scaler._scale < before).to(torch.int64).reshape(())

    def metrics(self) -> dict[str, Any]:
        """``loss_scale`` and the cumulative ``overflow_steps`` (host reads: log steps only)."""
        return {"loss_scale": self.scaler.get_scale(), "overflow_steps": int(self.overflows)}

    def state_dict(self) -> dict[str, Any]:
        return {**self.scaler.state_dict(), "overflow_steps": int(self.overflows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.overflows.fill_(state.pop("overflow_steps"))
        self.scaler.load_state_dict(state)


def deepspeed_fp16(enabled: bool, device: torch.device) -> dict[str, Any]:
    """backend=deepspeed's ``fp16`` section (``DEEPSPEED_FP16`` when enabled).

    DeepSpeed runs fp16 on a CPU only where oneDNN has fp16 kernels (AVX512-FP16 or AMX-FP16:
    its CPU accelerator's ``is_fp16_supported``); elsewhere its engine stops in ``initialize``
    with "Type fp16 is not supported on your device", so this refuses the setting first, as one
    ConfigError line naming the valid values."""
    if not enabled:
        return {"enabled": False}
    from deepspeed.accelerator import get_accelerator  # only here: DeepSpeed is an extra

    if not get_accelerator().is_fp16_supported():
        raise ConfigError("train.precision: 'fp16' is not supported by DeepSpeed on this "
                          f"{device.type} (it needs AVX512-FP16 or AMX-FP16); valid here: auto, "
                          "fp32, bf16, or fp16 with backend=torch")
    return {"enabled": True, **DEEPSPEED_FP16}
