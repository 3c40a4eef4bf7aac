"""The Backend contract: every registered backend fulfils it, and the loop drives it in one
direction (micro-batches, one read, then the step), with XLA's graph step an explicit call."""
from __future__ import annotations

import inspect
import itertools

import pytest
import torch

import mim
from mim.config.compose import load
from mim.config.schema import TrainConfig
from mim.data import Batch
from mim.engine.backends.base import Backend
from mim.engine.backends.torch import TorchBackend
from mim.engine.backends.deepspeed.backend import DeepSpeedBackend
from mim.engine.loop import LoopSettings, LoopState, Trainer
from mim.engine.optim import build_adamw, cosine_schedule
from mim.registry import BACKENDS

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)


@pytest.mark.parametrize("name", BACKENDS.names())
def test_every_registered_backend_fulfils_the_contract(name: str) -> None:
    cls = BACKENDS.get(name)
    assert issubclass(cls, Backend) and not inspect.isabstract(cls), cls
    # built as train.py builds it: the train settings and the typed Config (or None)
    params = inspect.signature(cls).parameters
    assert {"precision", "accum_steps", "clip_grad", "compile", "batch_size",
            "config"} <= set(params), name


def test_the_run_spec_carries_the_typed_plugin_configs() -> None:
    spec = load(["backend=deepspeed", "backend.zero_stage=1", "launcher.nprocs=2"])
    assert spec.backend.name == "deepspeed"
    assert isinstance(spec.backend.config, DeepSpeedBackend.Config)
    assert spec.backend.config.zero_stage == 1
    assert spec.launcher.config.nprocs == 2
    assert load([]).backend.config is None  # backend=torch takes no parameters


def test_the_trainer_defaults_are_the_schemas() -> None:
    defaults = inspect.signature(Trainer).parameters
    for key in ("nonfinite", "max_nonfinite_skips", "max_unreadable"):
        assert defaults[key].default == getattr(TrainConfig(), key), key


class Recording(TorchBackend):
    """The torch backend, writing down the contract calls the loop makes."""

    calls: list[str]

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        self.calls.append(f"backward({boundary})")
        super().backward(loss, boundary)

    def mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        self.calls.append("mean")
        return super().mean_across_ranks(value)

    def sync(self) -> None:
        self.calls.append("sync")

    def step(self) -> None:
        self.calls.append("step")
        super().step()

    def skip_step(self) -> None:
        self.calls.append("skip")
        super().skip_step()


def _trainer(accum: int, nonfinite: str = "stop") -> tuple[Trainer, Recording]:
    torch.manual_seed(0)
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    backend = Recording(accum_steps=accum)
    backend.calls = []
    optimizer = build_adamw(model, 1e-3, (0.9, 0.95), 0.05)
    runner = backend.setup(model, optimizer, cosine_schedule(optimizer, 1, 10))
    settings = LoopSettings(10, None, 2, accum, 1, 1, 1, 2)
    trainer = Trainer(runner, model, backend, None, settings, None, None, LoopState(), None, {},
                      nonfinite=nonfinite)
    return trainer, backend


def _batches(scale: float = 1.0):
    g = torch.Generator().manual_seed(0)
    for _ in itertools.count():
        x = torch.randn(2, 3, 32, 32, generator=g) * scale
        mask = torch.stack([torch.randperm(16, generator=g) < 12 for _ in range(2)])
        yield Batch(x, mask, torch.full((2,), -1), items=2)


def test_one_optimiser_step_reads_once_and_syncs_explicitly() -> None:
    trainer, backend = _trainer(accum=3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    loss_sum, applied = trainer.train_step(_batches())
    assert applied and loss_sum > 0
    assert backend.calls == ["backward(False)", "sync", "backward(False)", "sync",
                             "backward(True)", "mean", "sync", "step", "sync"]
    assert backend.micro_step == 3 and trainer.state.step == 1 and trainer.state.samples == 6
    assert trainer.state.items == 6
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_a_nonfinite_step_is_skipped_without_the_optimiser() -> None:
    trainer, backend = _trainer(accum=2, nonfinite="skip")
    trainer.train_step(_batches(scale=float("nan")))
    assert backend.calls == ["backward(False)", "sync", "backward(True)", "mean", "sync", "skip"]
    assert trainer.state.nonfinite_skips == 1 and backend.micro_step == 2
