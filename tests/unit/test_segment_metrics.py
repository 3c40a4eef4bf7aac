"""mim eval segment's scores and sliding windows, against plain computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mim.eval.segment.heads import evenly_spaced, upsampling_steps
from mim.eval.segment.metrics import confusion, dice, dice_scores, iou_scores
from mim.eval.segment.sliding import gaussian, sliding_window, starts


def reference_iou(pred: np.ndarray, label: np.ndarray, classes: int, ignore: int):
    """Per-class IoU, pixel accuracy from sets of pixels, one class at a time."""
    valid = label != ignore
    ious = []
    for k in range(classes):
        p, g = (pred == k) & valid, (label == k) & valid
        union = (p | g).sum()
        ious.append(math.nan if union == 0 else (p & g).sum() / union)
    return ious, (pred[valid] == label[valid]).mean()


def test_iou_equals_the_per_class_set_computation():
    rng = np.random.default_rng(0)
    classes, ignore = 5, 255
    total = torch.zeros(classes, classes, dtype=torch.long)
    preds, labels = [], []
    for _ in range(4):
        label = rng.integers(0, classes - 1, size=(17, 23))  # class 4 never in the labels
        label[rng.random(label.shape) < 0.1] = ignore
        pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, classes - 1,
                                                                           label.shape))
        pred[pred == ignore] = 0
        total += confusion(torch.from_numpy(pred), torch.from_numpy(label), classes, ignore)
        preds.append(pred), labels.append(label)
    ious, accuracy = reference_iou(np.concatenate(preds), np.concatenate(labels), classes,
                                   ignore)
    scores = iou_scores(total, [f"c{k}" for k in range(classes)])
    assert scores["per_class_iou"]["c4"] is None  # neither labelled nor predicted: left out
    for k in range(4):
        assert scores["per_class_iou"][f"c{k}"] == pytest.approx(100 * ious[k])
    assert scores["mIoU"] == pytest.approx(100 * np.nanmean(ious))
    assert scores["aAcc"] == pytest.approx(100 * accuracy)


def test_dice_per_volume_then_per_class():
    label = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 1]])
    per = dice(confusion(pred, label, 4, 255))
    # class 1: tp 3, gt 3, pred 4 -> 6 / 7; class 2: tp 1, gt 2, pred 1 -> 2 / 3; class 3 absent
    assert per[1].item() == pytest.approx(6 / 7) and per[2].item() == pytest.approx(2 / 3)
    assert math.isnan(per[3].item())
    other = dice(confusion(label, label, 4, 255))  # a perfect second volume
    scores = dice_scores([per, other], ["bg", "a", "b", "c"])
    assert scores["per_class_dice"]["a"] == pytest.approx(100 * (6 / 7 + 1) / 2)
    assert scores["per_class_dice"]["c"] is None
    fg = [(6 / 7 + 1) / 2, (2 / 3 + 1) / 2]
    assert scores["mean_dice_foreground"] == pytest.approx(100 * sum(fg) / 2)


def test_window_starts_cover_the_axis_and_end_flush():
    assert starts(50, 64, 0.25) == [0]
    assert starts(100, 64, 0.25) == [0, 36]
    assert starts(200, 64, 0.5) == [0, 32, 64, 96, 128, 136]


def test_gaussian_peaks_in_the_centre_and_never_weighs_nothing():
    weight = gaussian((9, 12), torch.device("cpu"))
    assert weight.shape == (9, 12) and weight.min() > 0
    assert weight[4, 5] == weight.max() and weight[0, 0] < 0.01


def test_one_window_equals_whole_inference():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(1, 3, 32, 32)
    for weighting in ("constant", "gaussian"):
        assert torch.allclose(sliding_window(net, x, (32, 32), 0.25, weighting, 4), net(x))


@pytest.mark.parametrize("weighting", ["constant", "gaussian"])
def test_a_pointwise_model_is_the_same_through_any_windows(weighting):
    """A 1x1 convolution gives every pixel the same logits in every window, so blending the
    windows in 2D or 3D (and the padding of a small input) changes nothing."""
    torch.manual_seed(0)
    for rank, shape, window in ((2, (45, 70), (32, 32)), (3, (20, 37, 9), (16, 16, 16))):
        conv = (torch.nn.Conv2d if rank == 2 else torch.nn.Conv3d)(2, 3, 1)
        x = torch.randn(1, 2, *shape)
        out = sliding_window(conv, x, window, 0.5, weighting, 3)
        assert out.shape == (1, 3, *shape)
        assert torch.allclose(out, conv(x), atol=1e-5)


def test_windows_slide_over_the_last_axes_and_keep_the_dates_whole():
    """x [1, C, T, H, W] with 2D windows: every window holds all dates; a model folding the
    dates into its channels gives the same logits through windows as whole."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2 * 3, 4, 1)
    fold = lambda x: conv(x.flatten(1, 2))  # noqa: E731  [n, C, T, h, w] -> [n, K, h, w]
    x = torch.randn(1, 2, 3, 40, 50)
    out = sliding_window(fold, x, (32, 32), 0.25, "gaussian", 2)
    assert out.shape == (1, 4, 40, 50) and torch.allclose(out, fold(x), atol=1e-5)


def test_block_choices():
    assert evenly_spaced(12, 4) == [2, 5, 8, 11]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced(12, 1) == [11]
    assert upsampling_steps((16, 16, 16)) == 4 and upsampling_steps((8, 8)) == 3
    with pytest.raises(ValueError, match="2\\^n"):
        upsampling_steps((12, 12))


def _tiny(name: str, **kw):
    from mim import create_model

    return create_model(name, embed_dim=32, depth=4, num_heads=2, decoder_embed_dim=16,
                        decoder_depth=1, decoder_num_heads=2, **kw)


def test_heads_give_logits_at_the_input_size_and_upernet_takes_a_hybrids_pyramid():
    from mim.eval.segment.heads import build_segmenter

    torch.manual_seed(0)
    hybrid = _tiny("mcmae_base", patch_size=8, tokenizer={"dims": [8, 16], "depths": [1, 1]})
    seg = build_segmenter(hybrid, "upernet", 5, None, 2, (3, 32, 32), 16, 8)
    assert seg.use_pyramid and [m.shape[1] for m in seg.features(torch.zeros(1, 3, 32, 32))] \
        == [8, 16, 32, 32]  # the conv stages, the tokens, their pooled map
    assert seg(torch.randn(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    plain = _tiny("mae_vit_tiny_patch16", patch_size=8)
    for head, blocks in (("linear", [3]), ("upernet", [0, 1, 2, 3]), ("unetr", [0, 2, 3])):
        seg = build_segmenter(plain, head, 4, None, 2, (3, 32, 32), 16, 8)
        assert seg.blocks == blocks and not seg.use_pyramid
        assert seg(torch.randn(2, 3, 32, 32)).shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="segment.blocks"):
        build_segmenter(plain, "upernet", 4, [1, 9], 2, (3, 32, 32), 16, 8)
    # several blocks for linear: every one of them reaches the head (their maps concatenated)
    seg = build_segmenter(plain, "linear", 4, [1, 3], 2, (3, 32, 32), 16, 8)
    assert seg.head.conv.in_channels == 2 * 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = seg(x)
        seg.head.conv.weight[:, :32] = 0  # block 1's share of the head
        assert not torch.allclose(seg(x), before)


def test_constant_blending_equals_monais_sliding_window_inference():
    """The same windows as MONAI's ``sliding_window_inference`` (its scan interval, the last
    window flush with the end, zero padding of a small input): the same logits."""
    monai = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 5, padding=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 3, 3, padding=1))
    for shape, overlap in (((70, 45), 0.25), ((100, 64), 0.5), ((20, 90), 0.25)):
        x = torch.randn(1, 2, *shape)
        with torch.no_grad():
            theirs = monai.sliding_window_inference(x, (32, 32), 4, net, overlap=overlap,
                                                    mode="constant", padding_mode="constant")
        assert torch.allclose(sliding_window(net, x, (32, 32), overlap, "constant", 4), theirs,
                              atol=1e-6)
