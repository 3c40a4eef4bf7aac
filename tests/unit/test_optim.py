"""MAE's optimiser recipe: warmup + cosine, no decay on biases/norms/tokens, linear lr scaling."""
from __future__ import annotations

import math

import mim
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mim.engine.optim import (build_adamw, cosine_factor, cosine_schedule, effective_lr,
                              param_groups)

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)


@given(warmup=st.integers(1, 50), extra=st.integers(1, 200), min_ratio=st.floats(0.0, 0.5))
def test_cosine_factor_shape(warmup, extra, min_ratio):
    total = warmup + extra
    f = [cosine_factor(s, warmup, total, min_ratio) for s in range(total + 5)]
    for s in range(warmup):  # linear rise reaching exactly 1 at the end of warmup
        assert f[s] == pytest.approx((s + 1) / warmup)
    assert f[warmup - 1] == pytest.approx(1.0)
    assert f[warmup] == pytest.approx(1.0)  # the cosine starts at its peak
    after = f[warmup:total + 1]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # never increases
    assert f[total] == pytest.approx(min_ratio)
    assert all(v == pytest.approx(min_ratio) for v in f[total:])  # stays at the floor
    mid = warmup + extra / 2
    if mid == int(mid):
        assert f[int(mid)] == pytest.approx(min_ratio + (1 - min_ratio) / 2)


def test_cosine_without_warmup_and_schedule_drives_the_optimiser():
    assert cosine_factor(0, 0, 10, 0.0) == pytest.approx(1.0)
    assert cosine_factor(5, 0, 10, 0.0) == pytest.approx(0.5)
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=0.1)
    sched = cosine_schedule(opt, warmup_steps=4, total_steps=20, min_ratio=0.1)
    seen = []
    for _ in range(22):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step, lr in enumerate(seen):
        assert lr == pytest.approx(0.1 * cosine_factor(step, 4, 20, 0.1))
    assert seen[0] == pytest.approx(0.025) and seen[3] == pytest.approx(0.1)
    assert seen[20] == pytest.approx(0.01)


def test_param_groups_decay_only_matrices():
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    model.decoder_pred.bias.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p): "decay" for p in decay["params"]}
    ids.update({id(p): "no_decay" for p in no_decay["params"]})
    group = {name: ids.get(id(p)) for name, p in model.named_parameters()}
    for name in ("cls_token", "mask_token", "norm.weight", "norm.bias", "decoder_norm.weight",
                 "blocks.0.norm1.weight", "blocks.0.norm2.bias", "blocks.0.attn.qkv.bias",
                 "blocks.0.mlp.fc1.bias", "tokenizer.proj.bias", "decoder_embed.bias"):
        assert group[name] == "no_decay", name
    for name in ("tokenizer.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                 "blocks.0.mlp.fc2.weight", "decoder_embed.weight",
                 "decoder_blocks.0.mlp.fc1.weight", "decoder_pred.weight"):
        assert group[name] == "decay", name
    assert group["decoder_pred.bias"] is None
    for name, p in model.named_parameters():  # every other parameter: by shape and name
        if group[name] == "decay":
            assert p.ndim >= 2 and not name.endswith((".bias", "_token"))
    assert len(ids) == sum(1 for p in model.parameters() if p.requires_grad)


def test_build_adamw():
    model = mim.create_model("mae_vit_tiny_patch16", **TINY)
    opt = build_adamw(model, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 2e-3 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)


def test_effective_lr_linear_scaling():
    assert effective_lr(1.5e-4, 4096) == pytest.approx(2.4e-3, rel=1e-12)  # MAE's ViT-L setting
    assert effective_lr(1.5e-4, 256) == pytest.approx(1.5e-4, rel=1e-12)
    assert math.isclose(effective_lr(1e-3, 512), 2 * effective_lr(1e-3, 256))


@pytest.mark.parametrize("overrides, warmup, rule", [
    # train.max_steps sets the length: MAE's share of it (40 of 800 epochs: 5 %)
    (["train.max_steps=300"], 15, "optim.warmup_epochs / train.epochs (40 / 800) of "
                                  "train.max_steps"),
    (["train.max_steps=300", "optim.warmup_epochs=80"], 30, "(80 / 800)"),
    (["train.max_steps=300", "optim.warmup_steps=7"], 7, "optim.warmup_steps"),
    (["train.max_steps=5", "optim.warmup_steps=20"], 4, "optim.warmup_steps, cut to the run's "
                                                        "steps - 1"),
    # 26 photos, batch 16: 1 step an epoch
    (["train.max_steps=null", "train.epochs=100"], 40, "optim.warmup_epochs"),
])
def test_a_short_run_warms_up_for_its_share_and_says_which_rule(overrides, warmup, rule):
    from mim.config.compose import load
    from mim.preview import derived

    unset = [] if any(o.startswith("optim.warmup_steps") for o in overrides) else [
        "optim.warmup_steps=null"]  # the demo experiment sets 20
    values = derived(load(["modality=image", *unset, *overrides]))
    assert values["warmup_steps"] == warmup and rule in values["warmup_rule"]
    # extending the run keeps the warmup's share, so the peak is not at the old run's end
    if overrides == ["train.max_steps=300"]:
        longer = derived(load(["modality=image", "optim.warmup_steps=null",
                               "train.max_steps=600"]))
        assert longer["warmup_steps"] == 30 < 300
