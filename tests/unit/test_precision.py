"""``train.precision=auto``: bf16 exactly where the device computes it natively."""
from __future__ import annotations

import pytest
import torch

from mim.config.schema import TrainConfig
from mim.engine import precision as precisions
from mim.engine.backends.torch import TorchBackend

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx512f amx_tile amx_int8 amx_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd atomics\n"


@pytest.mark.parametrize("text, flag", [(ZEN4, "avx512_bf16"), (SKYLAKE, None),
                                        (SAPPHIRE, "amx_bf16"), (GRAVITON3, "bf16"),
                                        (GRAVITON2, None), ("", None)])
def test_cpu_flags_are_read_from_cpuinfo(text, flag):
    assert precisions.bf16_flag_in(text) == flag


def test_auto_is_the_default_and_resolves_by_the_hardware():
    assert TrainConfig().precision == "auto"
    assert precisions.resolve("auto", (True, "x")) == ("bf16", "train.precision=auto: x")
    assert precisions.resolve("auto", (False, "y")) == ("fp32", "train.precision=auto: y")
    assert precisions.resolve("fp16", (True, "x")) == (
        "fp16", "train.precision=fp16, with dynamic loss scaling")
    for asked in ("fp32", "bf16", "fp16"):  # an explicit choice is kept whatever the hardware
        assert precisions.resolve(asked, (asked == "fp32", "z"))[0] == asked


def test_a_bad_value_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"train.precision: 'fp8' is not one of: auto, fp32, "
                                         r"bf16, fp16"):
        TorchBackend(precision="fp8")


@pytest.mark.parametrize("native", [False, True])
def test_the_torch_backend_autocasts_in_what_auto_chose(monkeypatch, native):
    monkeypatch.setenv(precisions.OVERRIDE, str(int(native)))
    backend = TorchBackend(precision="auto")
    assert backend.precision == ("bf16" if native else "fp32")
    assert backend.precision_and_reason[1] == f"train.precision=auto: MIM_NATIVE_BF16={int(native)}"
    layer = torch.nn.Linear(8, 8)
    with backend.autocast():
        out = layer(torch.randn(2, 8))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert TorchBackend(precision="fp32").precision == "fp32"


def test_without_the_override_the_cpu_flag_decides(monkeypatch):
    monkeypatch.delenv(precisions.OVERRIDE, raising=False)
    flag = precisions.cpu_bf16_flag()
    native, why = precisions.native_bf16(torch.device("cpu"))
    assert native == (flag is not None) == precisions.cpu_native_bf16()
    assert (f"the CPU has {flag}" if flag else "the CPU has no native bf16") in why


def test_a_bad_override_names_the_variable_and_the_values(monkeypatch):
    monkeypatch.setenv(precisions.OVERRIDE, "yes")
    with pytest.raises(ValueError, match=r"MIM_NATIVE_BF16: 'yes' is not one of: 0, 1"):
        precisions.native_bf16(torch.device("cpu"))


def test_subnormals_are_flushed_while_training_and_restored_after():
    tiny = torch.tensor([1e-39])  # a subnormal float32
    assert float(tiny * 1.0) > 0.0
    with precisions.subnormals_flushed():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) > 0.0  # the process is left as it was found
