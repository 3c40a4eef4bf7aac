"""Rules with one home each: the schedule, no-decay, decoder names, norm-pix, model choices.

Each is checked against the formula it replaced, bit for bit, on real models where it applies.
"""
from __future__ import annotations

import math

import mim
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mim.convert.common import DECODER_TENSORS
from mim.engine.optim import cosine_factor, decays, param_groups, warmup_cosine
from mim.eval.schema import FinetuneConfig
from mim.eval.finetune import Classifier
from mim.eval.finetune import param_groups as finetune_groups
from mim.eval.schedule import lr_at
from mim.model import DECODER_PREFIXES, patch_stats, split_state

TINY = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
            decoder_num_heads=2)
# one model per tokenizer family, with a learned table where it applies
MODELS = [("mae_vit_base_patch16", dict(patch_size=8)),
          ("mae_vit_base_patch16", dict(patch_size=8, pos_embed="learned", pos_grid=[4, 4])),
          ("maest_vit_base_patch16_16x224", dict(patch_size=8)),
          ("mcmae_base", dict(patch_size=8, hybrid_dims=[8, 16], hybrid_depths=[1, 1]))]


def _old_pretrain_factor(step, warmup, total, min_ratio):  # the formula before warmup_cosine
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _old_eval_lr(step, per_epoch, epochs, warmup, peak, min_lr):  # eval/schedule.py before
    epoch = step / per_epoch
    if epoch < warmup:
        return peak * epoch / warmup
    span = max(epochs - warmup, 1e-12)
    progress = min(1.0, (epoch - warmup) / span)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@given(warmup=st.integers(0, 30), total=st.integers(0, 80), min_ratio=st.floats(0.0, 0.9))
def test_pretraining_factor_is_the_old_formula_exactly(warmup, total, min_ratio):
    for step in range(total + 3):
        assert cosine_factor(step, warmup, total, min_ratio) == \
            _old_pretrain_factor(step, warmup, total, min_ratio)


@given(per_epoch=st.integers(1, 9), epochs=st.integers(1, 6),
       warmup=st.floats(0.0, 3.0), peak=st.floats(1e-5, 1.0), min_lr=st.floats(0.0, 1e-5))
def test_eval_lr_is_the_old_formula_exactly(per_epoch, epochs, warmup, peak, min_lr):
    for step in range(per_epoch * epochs + 2):
        assert lr_at(step, per_epoch, epochs, warmup, peak, min_lr) == \
            _old_eval_lr(step, per_epoch, epochs, warmup, peak, min_lr)


def test_warmup_cosine_endpoints():
    assert warmup_cosine(0.0, 2.0, 10.0, 3.0, 1.0) == 0.0
    assert warmup_cosine(1.0, 2.0, 10.0, 3.0, 1.0) == 1.5
    assert warmup_cosine(2.0, 2.0, 10.0, 3.0, 1.0) == 3.0
    assert warmup_cosine(6.0, 2.0, 10.0, 3.0, 1.0) == pytest.approx(2.0)
    assert warmup_cosine(12.0, 2.0, 10.0, 3.0, 1.0) == 1.0


@pytest.mark.parametrize("name,overrides", MODELS)
def test_pretraining_groups_keep_the_old_split(name, overrides):
    model = mim.create_model(name, **TINY, **overrides)
    old = {"cls_token", "mask_token", "pos_embed"}
    expected = [n for n, p in model.named_parameters()
                if p.ndim <= 1 or n.endswith(".bias") or any(k in n for k in old)]
    decay, no_decay = param_groups(model, 0.05)
    ids = {id(p): n for n, p in model.named_parameters()}
    assert [ids[id(p)] for p in no_decay["params"]] == expected
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(expected) == len(list(model.parameters()))


@pytest.mark.parametrize("name,overrides", MODELS)
def test_finetuning_uses_the_same_no_decay_rule_as_before(name, overrides):
    model = Classifier(mim.create_model(name, **TINY, **overrides), 3, "avg")
    groups = finetune_groups(model, FinetuneConfig())
    got = {id(p): g["weight_decay"] == 0.0 for g in groups for p in g["params"]}
    for n, p in model.named_parameters():
        if id(p) not in got:
            continue
        short = n.removeprefix("encoder.")  # the rule finetune.py had of its own
        old = p.ndim <= 1 or n.endswith(".bias") or short.startswith(
            ("cls_token", "learned_pos_embed"))
        assert got[id(p)] == old == (not decays(n, p)), n
    assert any(not g["weight_decay"] for g in groups) and any(g["weight_decay"] for g in groups)


@pytest.mark.parametrize("name,overrides", MODELS)
def test_split_state_separates_encoder_and_decoder(name, overrides):
    model = mim.create_model(name, **TINY, **overrides)
    state = model.state_dict()
    encoder, decoder = split_state(state)
    assert set(encoder) | set(decoder) == set(state) and not set(encoder) & set(decoder)
    assert {k.split(".")[0] for k in decoder} == {"decoder_embed", "mask_token",
                                                  "decoder_blocks", "decoder_norm",
                                                  "decoder_pred"}
    assert {k.split(".")[0] for k in encoder} <= {"tokenizer", "cls_token",
                                                  "learned_pos_embed", "blocks", "norm"}
    assert any(k.startswith("blocks.") for k in encoder) and "norm.weight" in encoder
    assert all(k.startswith(DECODER_PREFIXES) for k in decoder)
    # the converters' list of the decoder's tensors outside its blocks is this model's
    assert {k for k in decoder if not k.startswith("decoder_blocks.")} == set(DECODER_TENSORS)
    # the encoder alone is what a Classifier trains: its parameter count matches
    trainable = sum(p.numel() for p in encoder.values())
    counted = sum(p.numel() for n, p in model.named_parameters() if n in encoder)
    assert trainable == counted


def test_norm_pix_target_uses_patch_stats_and_the_panels_invert_it():
    model = mim.create_model("mae_vit_base_patch16", **TINY, patch_size=8)
    x = torch.randn(2, 3, 16, 16)
    patches = model.tokenizer.patchify(x)  # [2, 4, 192]
    mean, std = patch_stats(patches)
    assert mean.shape == std.shape == (2, 4, 1)
    expected = (patches - patches.mean(-1, keepdim=True)) / (
        patches.var(-1, keepdim=True) + 1.0e-6) ** 0.5
    assert torch.equal(model.target(x), expected)
    assert torch.allclose(model.target(x) * std + mean, patches, atol=1e-5)


@pytest.mark.parametrize("key,value", [("pos_embed", "fourier"), ("loss_on", "visible"),
                                       ("activation_checkpointing", "some")])
def test_config_and_model_reject_a_bad_choice_with_the_same_message(key, value):
    from mim.factory import ModelConfig, build_model
    from mim.model import CHOICES, MaskedAutoencoder

    cfg = ModelConfig(**TINY, patch_size=8)
    with pytest.raises(ValueError) as from_config:
        ModelConfig(**TINY, patch_size=8, **{key: value})
    kwargs = {k: v for k, v in TINY.items() if k != "embed_dim"}
    with pytest.raises(ValueError) as from_model:
        MaskedAutoencoder(build_model(cfg, 3).tokenizer, **kwargs, **{key: value})
    assert str(from_config.value) == str(from_model.value) == (
        f"model.{key}: '{value}' is not one of: {', '.join(CHOICES[key])}")
    for good in CHOICES[key]:  # every listed value is accepted by both
        extra = dict(pos_grid=[2, 2]) if good == "learned" else {}
        ModelConfig(**TINY, patch_size=8, **{key: good}, **extra)


def _class_folders(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.txt").write_text("x")
    return root


def _scan(root):
    from mim.files import find_files

    return find_files(root, lambda n: n.endswith(".txt"), "text files")


def test_split_items_holds_out_a_seeded_fraction_or_takes_the_given_set():
    from mim.labelled import split_items, stratified_split

    items = [f"item{i}" for i in range(12)]
    labels = [i % 3 for i in range(12)]
    train, held = split_items(items, labels, None, 0.25, seed=7)
    ids_train, ids_held = stratified_split(labels, 0.25, 7)
    assert train == [items[i] for i in ids_train] and held == [items[i] for i in ids_held]
    assert sorted(train + held) == sorted(items) and len(held) == 3
    assert {labels[items.index(h)] for h in held} == {0, 1, 2}  # one of every class
    assert split_items(items, labels, None, 0.25, seed=8) != (train, held)
    assert split_items(items, labels, ["v"], 0.25, seed=7) == (items, ["v"])


def test_split_files_reads_a_val_root_onto_the_training_classes(tmp_path):
    from mim.labelled import labelled_files, split_files

    root = _class_folders(tmp_path / "train", {"cat": 4, "dog": 4, "owl": 2})
    val_root = _class_folders(tmp_path / "val", {"dog": 1, "owl": 2})
    files, labels, classes = labelled_files(root, "folders", None, "data.root", _scan)
    assert classes == ["cat", "dog", "owl"]
    train, train_labels, val, val_labels = split_files(files, labels, classes, str(val_root),
                                                       "folders", 0.25, 0, _scan)
    assert (train, train_labels) == (files, labels)
    assert val_labels == [1, 2, 2] and [p.parent.name for p in val] == ["dog", "owl", "owl"]
    train, train_labels, val, val_labels = split_files(files, labels, classes, None, "folders",
                                                       0.25, 0, _scan)
    assert sorted(train + val) == sorted(files) and len(val) == 3
    assert [classes[label] for label in val_labels] == [p.parent.name for p in val]
    (tmp_path / "empty" / "dog").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="data.val_root"):
        split_files(files, labels, classes, str(tmp_path / "empty"), "folders", 0.25, 0,
                    lambda r: [])
    with pytest.raises(FileNotFoundError, match="data.val_root: classes"):
        split_files(files, labels, classes[:2], str(val_root), "folders", 0.25, 0, _scan)
