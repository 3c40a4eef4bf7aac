"""Rules with one home each: the schedule, no-decay, decoder names, norm-pix, model choices.

Each is checked by the behaviour it promises, on real models where it applies.
"""
from __future__ import annotations

import mim
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from mim.engine.optim import cosine_factor, decays, param_groups, warmup_cosine
from mim.eval.schema import FinetuneConfig
from mim.eval.finetune import Classifier
from mim.eval.finetune import param_groups as finetune_groups
from mim.eval.schedule import lr_at
from mim.models.keys import DECODER_PREFIXES, DECODER_TENSORS
from mim.models.model import patch_stats, split_state

TINY = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
            decoder_num_heads=2)
# one model per tokenizer family, with a learned table where it applies
MODELS = [("mae_vit_base_patch16", dict(patch_size=8)),
          ("mae_vit_base_patch16", dict(patch_size=8, pos_embed="learned", pos_grid=[4, 4])),
          ("maest_vit_base_patch16_16x224", dict(patch_size=8)),
          ("mcmae_base", dict(patch_size=8, tokenizer={"dims": [8, 16], "depths": [1, 1]}))]


@given(warmup=st.integers(0, 30), total=st.integers(0, 80), min_ratio=st.floats(0.0, 0.9))
def test_the_pretraining_factor_warms_up_linearly_then_decays_to_its_floor(warmup, total,
                                                                          min_ratio):
    assume(warmup < total)  # the plan cuts a warmup to the run's steps - 1
    factors = [cosine_factor(step, warmup, total, min_ratio) for step in range(total + 3)]
    for step, factor in enumerate(factors):
        if step < warmup:  # step s of the warmup runs at (s + 1) / warmup: never at lr 0
            assert factor == pytest.approx((step + 1) / warmup)
        else:
            assert min_ratio - 1e-12 <= factor <= 1.0 + 1e-12
    after = factors[warmup:]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # no rise after the peak
    assert factors[warmup] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(min_ratio)  # at and after the last step: the floor


@given(per_epoch=st.integers(1, 9), epochs=st.integers(1, 6),
       warmup=st.floats(0.0, 3.0), peak=st.floats(1e-5, 1.0), min_lr=st.floats(0.0, 1e-5))
def test_the_eval_lr_follows_the_fractional_epoch_on_the_same_curve(per_epoch, epochs, warmup,
                                                                    peak, min_lr):
    assume(warmup < epochs)  # fine-tuning's warmup is part of its epochs
    lrs = [lr_at(step, per_epoch, epochs, warmup, peak, min_lr)
           for step in range(per_epoch * epochs + 2)]
    for step, lr in enumerate(lrs):
        epoch = step / per_epoch
        assert lr == warmup_cosine(epoch, warmup, epochs, peak, min_lr)  # its one home
        if epoch < warmup:
            assert lr == pytest.approx(peak * epoch / warmup)
        assert lr <= peak + 1e-12
    assert lrs[-1] == pytest.approx(min_lr)


def test_warmup_cosine_endpoints():
    assert warmup_cosine(0.0, 2.0, 10.0, 3.0, 1.0) == 0.0
    assert warmup_cosine(1.0, 2.0, 10.0, 3.0, 1.0) == 1.5
    assert warmup_cosine(2.0, 2.0, 10.0, 3.0, 1.0) == 3.0
    assert warmup_cosine(6.0, 2.0, 10.0, 3.0, 1.0) == pytest.approx(2.0)
    assert warmup_cosine(12.0, 2.0, 10.0, 3.0, 1.0) == 1.0


def _expected_no_decay(model: torch.nn.Module) -> set[str]:
    """What MAE decays none of, by what each parameter is: every bias, every norm's parameters,
    and the tokens and position tables a model holds as bare parameters."""
    out = set()
    for prefix, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            norm = isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm1d,
                                       torch.nn.BatchNorm2d, torch.nn.GroupNorm))
            layer = isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d))
            if name == "bias" or norm or not layer:
                out.add(full)
    return out


@pytest.mark.parametrize("name,overrides", MODELS)
def test_pretraining_decays_the_layers_weights_only(name, overrides):
    model = mim.create_model(name, **TINY, **overrides)
    decay, no_decay = param_groups(model, 0.05)
    ids = {id(p): n for n, p in model.named_parameters()}
    assert {ids[id(p)] for p in no_decay["params"]} == _expected_no_decay(model)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name,overrides", MODELS)
def test_finetuning_uses_the_same_no_decay_rule(name, overrides):
    model = Classifier(mim.create_model(name, **TINY, **overrides), 3, "avg")
    groups = finetune_groups(model, FinetuneConfig())
    got = {id(p): g["weight_decay"] == 0.0 for g in groups for p in g["params"]}
    expected = _expected_no_decay(model)
    for n, p in model.named_parameters():
        if id(p) in got:  # the trainable ones
            assert got[id(p)] == (n in expected) == (not decays(n, p)), n
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
    from mim.models.factory import ModelConfig, build_model
    from mim.models.model import CHOICES, MaskedAutoencoder

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
    from mim.data.files import find_files

    return find_files(root, lambda n: n.endswith(".txt"), "text files")


def test_split_items_holds_out_a_seeded_fraction_or_takes_the_given_set():
    from mim.data.labelled import split_items, stratified_split

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
    from mim.data.labelled import labelled_files, split_files

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
