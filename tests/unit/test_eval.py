"""Evaluation parts: LARS, weighted k-NN, kernel and position transfer, layer-wise lr decay,
partial fine-tuning, test-view averaging, splits, and one-line config errors."""
from __future__ import annotations

import math

import mim
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from mim.config.errors import ConfigError
from mim.eval.plan import load_eval
from mim.eval.schema import FinetuneConfig
from mim.eval.features import embed
from mim.eval.finetune import Classifier, fold_for_cutmix, param_groups
from mim.eval.knn import knn_scores
from mim.eval.lars import LARS
from mim.eval.schedule import lr_at
from mim.models.transfer import build_encoder, resize_patch_kernel
from mim.data.labelled import stratified_split
from mim.models.factory import model_config

TINY = dict(embed_dim=32, depth=3, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
            decoder_num_heads=2, patch_size=8)


def test_lars_scales_weight_updates_by_the_trust_ratio() -> None:
    w = torch.nn.Parameter(torch.full((2, 2), 3.0))  # ||w|| = 6
    b = torch.nn.Parameter(torch.ones(2))
    opt = LARS([w, b], lr=0.5, momentum=0.0, trust_coefficient=0.01)
    w.grad = torch.tensor([[0.0, 4.0], [0.0, 3.0]])  # ||g|| = 5
    b.grad = torch.tensor([1.0, -1.0])
    opt.step()
    # weight: g * 0.01 * 6 / 5, times lr; bias (one axis): plain SGD
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 3.0 - 0.5 * 0.048],
                                                         [3.0, 3.0 - 0.5 * 0.036]]))
    torch.testing.assert_close(b.detach(), torch.tensor([0.5, 1.5]))


def test_knn_votes_are_similarity_weighted() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.5]])
    scores = knn_scores(train, labels, test, k=4, temperature=0.1, num_classes=2)
    assert scores.argmax(dim=1).tolist() == [0, 1, 0]
    sims = F.normalize(test[2:], dim=1) @ F.normalize(train, dim=1).T
    expected = [(sims[0, labels == c] / 0.1).exp().sum() for c in (0, 1)]
    torch.testing.assert_close(scores[2], torch.stack(expected))
    assert knn_scores(train, labels, test, k=99, temperature=0.1, num_classes=2).shape == (3, 2)


@given(st.lists(st.integers(0, 3), min_size=8, max_size=40), st.floats(0.1, 0.5),
       st.integers(0, 3))
def test_stratified_split_holds_out_part_of_every_class(labels, fraction, seed) -> None:
    train, held = stratified_split(labels, fraction, seed)
    assert sorted(train + held) == list(range(len(labels)))
    for label in set(labels):
        count = labels.count(label)
        if count > 1:
            assert any(labels[i] == label for i in train)
            assert any(labels[i] == label for i in held)
    assert stratified_split(labels, fraction, seed) == (train, held)


def test_cosine_schedule_warms_up_and_ends_at_min_lr() -> None:
    peak, steps = 1.0, 10
    values = [lr_at(s, steps, 5, 1.0, peak, 0.1) for s in range(5 * steps)]
    assert values[0] == 0.0 and values[5] == pytest.approx(0.5)
    assert max(values) == pytest.approx(peak, abs=0.01)
    assert lr_at(5 * steps, steps, 5, 1.0, peak, 0.1) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------ transfer
def test_bicubic_kernel_resize_keeps_shape_and_identity() -> None:
    w = torch.randn(4, 3, 8, 8)
    assert resize_patch_kernel(w, (8, 8)) is w
    assert resize_patch_kernel(w, (16, 16)).shape == (4, 3, 16, 16)
    cube = torch.randn(4, 3, 2, 8, 8)
    assert resize_patch_kernel(cube, (1, 16, 16)).shape == (4, 3, 1, 16, 16)
    assert resize_patch_kernel(cube, (4, 4, 4), "pinv").shape == (4, 3, 4, 4, 4)


def test_pinv_kernel_keeps_tokens_of_a_resized_input() -> None:
    """FlexiViT: <resize(x), w'> = <x, w> for every patch x when upsampling."""
    torch.manual_seed(0)
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    w_new = resize_patch_kernel(w, (8, 8), "pinv")
    x_new = F.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False)
    before = torch.einsum("ncij,dcij->nd", x, w)
    after = torch.einsum("ncij,dcij->nd", x_new, w_new)
    torch.testing.assert_close(after, before, atol=1e-8, rtol=1e-8)


def test_transfer_to_another_patch_size_and_resolution() -> None:
    torch.manual_seed(0)
    source = mim.create_model("mae_vit_base_patch16", **TINY)
    weights = mim.convert.Converted(model_config("mae_vit_base_patch16", **TINY), 3,
                                    source.state_dict(), "mim", (32, 32))
    target = model_config("mae_vit_base_patch16", **{**TINY, "patch_size": 16})
    model = build_encoder(target, 3, weights)
    assert model.tokenizer.proj.weight.shape[-2:] == (16, 16)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    assert model.encode(torch.randn(2, 3, 64, 64)).tokens.shape == (2, 1 + 16, 32)


def test_learned_table_is_interpolated_in_space_and_time() -> None:
    model = mim.create_model("mae_vit_base_patch16", **TINY, pos_embed="learned", pos_grid=[4, 4])
    assert model.encode(torch.randn(1, 3, 48, 48)).tokens.shape == (1, 1 + 36, 32)
    cube = mim.create_model("mae_vit_base_patch16", **{**TINY, "tokenizer": "cube",
                                                       "tubelet_size": 2},
                            pos_embed="learned", pos_grid=[2, 4, 4], cls_token=False)
    assert cube.encode(torch.randn(1, 3, 8, 48, 48)).tokens.shape == (1, 4 * 36, 32)


# ------------------------------------------------------------------------------------ finetune
def _classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(mim.create_model("mae_vit_base_patch16", **TINY), 4, "cls")


def test_layer_decay_scales_and_no_decay_groups() -> None:
    model = _classifier()
    groups = param_groups(model, FinetuneConfig(layer_decay=0.5))
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = 3
    assert by_param[id(named["head.weight"])]["lr_scale"] == 1.0
    assert by_param[id(named["encoder.blocks.2.mlp.fc1.weight"])]["lr_scale"] == 0.5
    assert by_param[id(named["encoder.blocks.0.mlp.fc1.weight"])]["lr_scale"] == 0.5 ** depth
    assert by_param[id(named["encoder.tokenizer.proj.weight"])]["lr_scale"] == 0.5 ** (depth + 1)
    assert by_param[id(named["encoder.cls_token"])]["weight_decay"] == 0.0
    assert by_param[id(named["encoder.blocks.0.norm1.weight"])]["weight_decay"] == 0.0
    assert by_param[id(named["head.weight"])]["weight_decay"] == 0.05
    assert not named["encoder.decoder_embed.weight"].requires_grad  # the decoder is not tuned


@pytest.mark.parametrize("blocks, trained", [(0, []), (1, [2]), (3, [0, 1, 2])])
def test_partial_finetuning_trains_only_the_last_blocks(blocks, trained) -> None:
    model = _classifier()
    param_groups(model, FinetuneConfig(blocks=blocks))
    live = {int(n.split(".")[2]) for n, p in model.named_parameters()
            if p.requires_grad and n.startswith("encoder.blocks.")}
    assert sorted(live) == trained
    assert model.encoder.norm.weight.requires_grad and model.head.weight.requires_grad
    assert model.encoder.tokenizer.proj.weight.requires_grad == (blocks == 3)


def test_test_views_are_averaged() -> None:
    model = mim.create_model("mae_vit_base_patch16", **TINY).eval()
    views = torch.randn(2, 3, 3, 32, 32)  # [B, V, C, H, W]
    with torch.no_grad():
        expected = torch.stack([embed(model, v, "avg") for v in views.unbind(1)]).mean(0)
        torch.testing.assert_close(embed(model, views, "avg"), expected)


def test_cutmix_folding_keeps_the_time_axis_together() -> None:
    x = torch.arange(2 * 3 * 4 * 5 * 6.0).reshape(2, 3, 4, 5, 6)
    folded = fold_for_cutmix(x)
    assert folded.shape == (2, 12, 5, 6) and folded.data_ptr() == x.data_ptr()
    folded[:, :, 1:3, 2:4] = -1.0  # a box, as cutmix pastes it
    assert (x[:, :, :, 1:3, 2:4] == -1).all() and (x[:, :, :, 0] != -1).all()


# ------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize("protocol, overrides, text", [
    ("knn", ["knn.k=0"], "knn.k: must be >= 1"),
    ("knn", ["knn.bogus=1"], "knn.bogus: unknown key; valid keys in knn: k, temperature"),
    ("knn", ["bogus=1"], "bogus: unknown key; valid keys: data, eval, knn, modality, model, run, "
                        "seed, weights"),
    ("linprobe", ["linprobe.optimizer=adam"], "is not one of: lars, sgd"),
    ("linprobe", ["knn.k=5"], "knn: unknown key; valid keys: data, eval, linprobe, modality"),
    ("knn", ["eval.pool=max"], "eval.pool: 'max' is not one of: auto, cls, avg"),
    ("knn", ["eval.batch_size=abc"], "eval.batch_size"),
    ("knn", ["eval.init=random", "data.val_fraction=2"], "data.val_fraction: must be in (0, 1)"),
    ("knn", ["eval.init=random", "data.bogus=1"], "data.bogus: unknown key; valid keys in data"),
    ("knn", [], "eval.init: 'pretrained' needs run.dir="),
    ("knn", ["eval.init=random", "model=vit_nope"], "model: unknown option 'vit_nope'; valid:"),
    ("knn", ["eval.init=random", "modality=sound"], "modality: unknown option 'sound'; valid:"),
    ("knn", ["eval.init=random", "data.input_size=30"], "data.input_size: input size"),
    ("knn", ["run.dir=/nonexistent/run"], "run.dir: /nonexistent/run/config.yaml not found"),
    ("knn", ["weights=/nonexistent.pth"], "weights: /nonexistent.pth: no such file"),
    ("knn", ["knn.k=1,2"], "knn.k: one value expected"),
    ("probe", [], "protocol: unknown 'probe'; valid: knn, linprobe, finetune"),
    ("finetune", ["finetune.layer_decay=1.5"], "finetune.layer_decay: must be in (0, 1]"),
    ("finetune", ["finetune.compile=fast"],
     "finetune.compile: 'fast' is not one of: none, blocks, model"),
    ("knn", ["eval.init=random", "data.root=/nonexistent"], "data.root: /nonexistent is not a"),
    ("knn", ["eval.init=random", "modality=omni"], "provides no labelled data for evaluation; valid: audio, image, video, volume"),
])
def test_bad_eval_configs_are_one_line_errors(protocol, overrides, text) -> None:
    with pytest.raises(ConfigError) as info:
        load_eval(protocol, overrides)
    message = str(info.value)
    assert text in message and "\n" not in message, message


def test_a_random_init_spec_takes_the_preset_and_the_overrides() -> None:
    spec = load_eval("knn", ["eval.init=random", "model=mae_vit_tiny_patch16",
                             "model.patch_size=8", "data.input_size=32", "knn.k=5", "seed=3"])
    assert spec.weights is None and spec.model.patch_size == 8 and spec.params.k == 5
    assert spec.data.input_size == 32 and spec.seed == 3 and spec.in_chans == 3
    assert math.isclose(spec.params.temperature, 0.07)


# ------------------------------------------------------------------------------ data sizes
def _class_folders(root, per_class: dict[str, int]):
    from PIL import Image
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 40), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    return root


RANDOM = ["eval.init=random", "model=mae_vit_tiny_patch16", "model.patch_size=8",
          "data.input_size=32"]


def test_one_item_per_class_is_refused_before_any_feature(tmp_path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 1, "b": 1})
    with pytest.raises(ConfigError, match=r"^data.root: no held-out item: a class needs two"):
        load_eval("knn", [*RANDOM, f"data.root={root}"])


def test_an_empty_val_root_is_named(tmp_path) -> None:
    root = _class_folders(tmp_path / "d", {"a": 2, "b": 2})
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError, match=r"^data.val_root: no image files under"):
        load_eval("knn", [*RANDOM, f"data.root={root}", f"data.val_root={tmp_path / 'val'}"])


def test_one_class_and_a_k_above_the_training_set_are_warned_about(tmp_path, caplog) -> None:
    root = _class_folders(tmp_path / "d", {"only": 4})
    with caplog.at_level("WARNING", logger="mim"):
        plan = load_eval("knn", [*RANDOM, f"data.root={root}", "knn.k=20"])
    assert len(plan.labelled.train) == 3
    assert "one class (only) only: every prediction is right" in caplog.text
    assert "knn.k=20 is more than the 3 training items" in caplog.text


def test_results_are_named_by_their_data_and_eval_out_may_be_a_file(tmp_path) -> None:
    a = _class_folders(tmp_path / "a" / "train", {"x": 2, "y": 2})
    b = _class_folders(tmp_path / "b" / "train", {"x": 2, "y": 2})
    out = f"eval.out={tmp_path / 'res'}"
    default = load_eval("knn", [*RANDOM, out]).out_file
    on_a = load_eval("knn", [*RANDOM, out, f"data.root={a}"]).out_file
    on_b = load_eval("knn", [*RANDOM, out, f"data.root={b}"]).out_file
    assert default == tmp_path / "res" / "knn-random.json"
    assert on_a.name.startswith("knn-random-train-") and len({default, on_a, on_b}) == 3
    file = load_eval("knn", [*RANDOM, f"eval.out={tmp_path / 'r.json'}"]).out_file
    assert file == tmp_path / "r.json"
