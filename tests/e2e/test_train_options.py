"""Training options through the real ``train()``: accumulation, clipping, bf16, compile,
TensorBoard output, and the stop on a non-finite loss. In-process runs of a tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mim.config.compose import load
from mim.engine.loop import NonFiniteLossError
from mim.models.model import MaskedAutoencoder
from mim.train import train
from tests.e2e.conftest import with_overrides

pytestmark = pytest.mark.e2e

TINY = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.num_workers=0",
        "train.log_every=1", "optim.lr=1e-3", "optim.warmup_steps=1",
        "train.precision=fp32"]  # compared exactly below; auto would differ between CPUs


def run(tmp: Path, name: str, *overrides: str) -> Path:
    return train(load(with_overrides(TINY, *overrides, f"run.dir={tmp / name}")))


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    return state["model"]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").open()]


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    full = run(tmp_path, "full", "train.batch_size=8", "train.max_steps=4", "train.ckpt_every=1",
               "train.keep_last=4")
    half = run(tmp_path, "half", "train.batch_size=4", "train.accum_steps=2", "train.max_steps=4")
    torch.testing.assert_close(losses(half), losses(full), rtol=1e-5, atol=1e-6)
    start = torch.load(full / "checkpoints" / "step_00000001" / "state.pt",
                       weights_only=True)["model"]
    a, b = final_model(full), final_model(half)
    # the two gradient sums differ only in float rounding order, but Adam divides each
    # gradient by its own running scale, so a parameter whose gradient is ~0 can take a
    # different full-size step: compare the whole update, not single elements
    moved = torch.cat([(a[k] - start[k]).flatten() for k in a])
    apart = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert float(apart.norm()) < 1e-2 * float(moved.norm()), (apart.norm(), moved.norm())


def test_clipping_bounds_the_update(tmp_path):
    moved = {}
    for name, extra in (("base", []), ("clip", ["train.clip_grad=1e-12"])):
        out = run(tmp_path, name, "train.batch_size=8", "train.max_steps=3",
                  "train.ckpt_every=1", "train.keep_last=3", *extra)
        first, last = (torch.load(out / "checkpoints" / f"step_{s:08d}" / "state.pt",
                                  weights_only=True)["model"] for s in (1, 3))
        moved[name] = sum(float((last[k] - first[k]).abs().sum()) for k in first)
    # with gradients clipped to norm 1e-12, Adam's steps (g / (sqrt(v) + 1e-8)) shrink ~1e4x
    assert moved["clip"] < 0.01 * moved["base"], moved


def test_bf16_autocast_trains_and_differs_from_fp32(tmp_path):
    fp32 = run(tmp_path, "fp32", "train.batch_size=8", "train.max_steps=3")
    bf16 = run(tmp_path, "bf16", "train.batch_size=8", "train.max_steps=3",
               "train.precision=bf16")
    assert all(torch.isfinite(torch.tensor(losses(bf16))))
    assert losses(bf16) != losses(fp32)  # autocast really changed the arithmetic
    torch.testing.assert_close(losses(bf16), losses(fp32), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("native", ["0", "1"])
def test_auto_precision_is_bf16_where_the_cpu_has_it_and_is_logged(tmp_path, monkeypatch,
                                                                   native):
    monkeypatch.setenv("MIM_NATIVE_BF16", native)  # what the CPU says, on any CPU
    out = run(tmp_path, "auto", "train.batch_size=8", "train.max_steps=2",
              "train.precision=auto")
    want = "bf16" if native == "1" else "fp32"
    assert json.loads((out / "derived.json").read_text())["precision"] == want
    assert (f"precision: {want} (train.precision=auto: MIM_NATIVE_BF16={native})"
            in (out / "train.log").read_text())
    fp32 = run(tmp_path, "fp32", "train.batch_size=8", "train.max_steps=2")
    assert (losses(out) == losses(fp32)) == (want == "fp32")


@pytest.mark.parametrize("mode", ["blocks", "model"])
def test_compiled_model_matches_eager(tmp_path, mode):
    eager = run(tmp_path, "eager", "train.batch_size=8", "train.max_steps=2")
    compiled = run(tmp_path, "compiled", "train.batch_size=8", "train.max_steps=2",
                   f"train.compile={mode}")
    torch.testing.assert_close(losses(compiled), losses(eager), rtol=1e-4, atol=1e-5)
    assert json.loads((compiled / "derived.json").read_text())["compile"] == mode
    assert json.loads((eager / "derived.json").read_text())["compile"] == "none"
    if mode == "blocks":  # the tiny model's encoder and decoder block
        assert "compile=blocks: 2 blocks compiled in place" in (compiled / "train.log").read_text()


def test_tensorboard_gets_the_scalars_and_the_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run(tmp_path, "tb", "train.batch_size=8", "train.max_steps=3", "train.vis_every=3")
    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert {"train/lr", "train/samples_per_s"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["reconstruction"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                             monkeypatch):
    real_loss = MaskedAutoencoder.loss
    calls = {"n": 0}

    def poisoned(self, x, pred, mask, weight=None):
        calls["n"] += 1
        value = real_loss(self, x, pred, mask, weight)
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr(MaskedAutoencoder, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        run(tmp_path, "nan", "train.batch_size=8", "train.max_steps=6", "train.ckpt_every=2",
            "train.vis_every=100")
    out = tmp_path / "nan"
    assert (out / "checkpoints" / "last").resolve().name == "step_00000002"
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [1, 2, 3]
    state = torch.load(out / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
