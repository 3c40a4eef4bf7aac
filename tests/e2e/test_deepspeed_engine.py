"""The DeepSpeed backend in this process (one rank, no torchrun): a real engine, consolidated
weights, round trip; slow for the unit tier (DeepSpeed's start, compiled blocks).

Multi-process runs, resume and loss curves are tested end to end (tests/e2e/test_deepspeed.py).
"""
from __future__ import annotations

import mim
import pytest
import torch
import torch.distributed as dist

from mim.engine.optim import build_adamw, cosine_schedule

pytestmark = pytest.mark.e2e

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)


@pytest.fixture(scope="module")
def fresh_group():
    """The backend creates a one-rank group when none exists; the tests here share it (DeepSpeed
    caches groups globally, so a second one in this process would not be seen), and none is left
    behind for other modules."""
    pytest.importorskip("deepspeed")  # here, not at collection: other modules never import it
    assert not dist.is_initialized()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    return x, torch.stack([torch.randperm(16, generator=g) < 12 for _ in range(2)])


def test_training_compiles_no_comm_op(fresh_group, tmp_path, monkeypatch) -> None:
    """DeepSpeed's comm layer would JIT-compile its shared-memory op here (the CPU accelerator):
    a C++ build of about a minute in each new environment, for inference only. The backend
    marks it unavailable, so nothing is built and training's collectives are torch's."""
    import deepspeed.comm.comm as ds_comm
    from mim.engine.backends.deepspeed.backend import DeepSpeedBackend

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # where a build would go
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    optimizer = build_adamw(model, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    backend = DeepSpeedBackend(batch_size=2, config=DeepSpeedBackend.Config(zero_stage=2))
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 2, 10))
    backend.backward(runner(*batch(1)).loss)
    backend.step()
    assert backend.engine.global_steps == 1
    assert ds_comm.cdb is not None and ds_comm.cdb.shm_comm_op is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", [0, 3])
def test_state_dict_is_the_whole_model_and_loads_back(fresh_group, stage: int) -> None:
    from mim.engine.backends.deepspeed.backend import DeepSpeedBackend

    torch.manual_seed(0)
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_adamw(model, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    backend = DeepSpeedBackend(batch_size=2, config=DeepSpeedBackend.Config(zero_stage=stage))
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 2, 10))

    before = backend.state_dict()["model"]
    assert before.keys() == initial.keys()
    for name, tensor in initial.items():  # full shapes and values, even from ZeRO-3 shards
        assert torch.equal(before[name], tensor), name

    x, mask = batch(1)
    loss = runner(x, mask).loss
    backend.backward(loss)
    backend.step()
    assert backend.engine.global_steps == 1  # the optimiser stepped
    after = backend.state_dict()["model"]
    assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])

    backend.load_state_dict({"model": before})
    for name, tensor in backend.state_dict()["model"].items():
        assert torch.equal(tensor, before[name]), name
    with torch.no_grad():
        assert runner(x, mask).loss.item() == loss.item()  # the module itself was reloaded too


def _first_step(compile: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a first ZeRO-2 step and the weights after it, with ``train.compile=compile``."""
    from mim.engine.backends.deepspeed.backend import DeepSpeedBackend

    torch.manual_seed(0)
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    optimizer = build_adamw(model, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    backend = DeepSpeedBackend(batch_size=2, compile=compile,
                               config=DeepSpeedBackend.Config(zero_stage=2))
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 2, 10))
    loss = runner(*batch(1)).loss
    backend.backward(loss)
    backend.step()
    assert backend.engine.global_steps == 1  # the optimiser stepped
    return loss.detach(), backend.state_dict()["model"]["blocks.0.attn.qkv.weight"]


def test_compiled_blocks_under_zero2_step_like_eager(fresh_group) -> None:
    eager_loss, eager_weight = _first_step("none")
    loss, weight = _first_step("blocks")
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight, eager_weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compile", ["blocks", "model"])
def test_zero3_refuses_compilation_before_any_work(compile: str) -> None:
    pytest.importorskip("deepspeed")
    from mim.config.compose import load
    from mim.config.errors import ConfigError
    from mim.engine.backends.deepspeed.backend import DeepSpeedBackend

    with pytest.raises(ConfigError, match="train.compile.*zero_stage=3.*valid there: none"):
        load(["backend=deepspeed", "backend.zero_stage=3", f"train.compile={compile}"])
    spec = load(["backend=deepspeed", "backend.zero_stage=2", f"train.compile={compile}"])
    assert DeepSpeedBackend(compile=compile, config=spec.backend.config).compile == compile


def test_the_fp16_section_is_deepspeeds_dynamic_scale_set_as_torchs() -> None:
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config
    from mim.engine.scaler import DEEPSPEED_FP16, GROWTH_INTERVAL, INIT_SCALE

    parsed = DeepSpeedFP16Config(enabled=True, **DEEPSPEED_FP16)  # DeepSpeed's own parser
    assert parsed.enabled and parsed.loss_scale == 0  # 0: dynamic
    assert list(parsed.dynamic_loss_scale_args().values()) == [
        INIT_SCALE, GROWTH_INTERVAL, 1, False, 1]  # init, window, hysteresis, consecutive, min
    assert torch.amp.GradScaler("cpu").get_scale() == INIT_SCALE


def test_fp16_is_built_where_deepspeed_runs_it_and_named_where_it_cannot() -> None:
    """DeepSpeed's CPU accelerator runs fp16 only with oneDNN fp16 kernels (AVX512-FP16 or
    AMX-FP16); on other CPUs the backend refuses it before DeepSpeed's engine would."""
    pytest.importorskip("deepspeed")
    from deepspeed.accelerator import get_accelerator
    from mim.config.errors import ConfigError
    from mim.engine.backends.deepspeed.backend import DeepSpeedBackend
    from mim.engine.scaler import DEEPSPEED_FP16

    assert DeepSpeedBackend(precision="fp32").fp16 == {"enabled": False}
    if get_accelerator().is_fp16_supported():
        backend = DeepSpeedBackend(precision="fp16")
        assert backend.fp16 == {"enabled": True, **DEEPSPEED_FP16}
        assert backend._ds_config(torch.optim.SGD([torch.zeros(1)], lr=1))["fp16"] == backend.fp16
    else:
        with pytest.raises(ConfigError) as err:
            DeepSpeedBackend(precision="fp16")
        assert str(err.value) == (
            "train.precision: 'fp16' is not supported by DeepSpeed on this cpu (it needs "
            "AVX512-FP16 or AMX-FP16); valid here: auto, fp32, bf16, or fp16 with backend=torch")
