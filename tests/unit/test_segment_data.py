"""Images and volumes with label maps for mim eval segment: layouts, the checks every pair
passes (each misfit left out, counted and named), and crops that keep image and label
aligned."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mim.data.segmentation import SegmentRules, reduce_zero, training_view
from mim.modalities.image.labelled import ImageEvalDataConfig
from mim.modalities.image.segment import resolve_segment, segmentation
from mim.modalities.volume import segment as volume_segment
from mim.modalities.volume.labelled import VolumeEvalDataConfig


def _scene(rng, h, w, classes=3):
    label = rng.integers(0, classes, size=(h, w)).astype(np.uint8)
    picture = np.stack([label * 80, 255 - label * 80, label * 30], axis=-1).astype(np.uint8)
    return picture, label


def write_ade(root, counts=(6, 2), size=(40, 52), names=None, folders=None):
    folders = folders or (("images", "training"), ("annotations", "training"),
                          ("images", "validation"), ("annotations", "validation"))
    rng = np.random.default_rng(0)
    for split, count in enumerate(counts):
        images, annotations = (root.joinpath(*folders[2 * split + k]) for k in (0, 1))
        images.mkdir(parents=True), annotations.mkdir(parents=True)
        for i in range(count):
            picture, label = _scene(rng, *size)
            Image.fromarray(picture).save(images / f"s{i}.png")
            Image.fromarray(label, mode="L").save(annotations / f"s{i}.png")
    if names:
        (root / "classes.txt").write_text("\n".join(names) + "\n")


def load(root, **rules):
    cfg = resolve_segment(ImageEvalDataConfig(root=str(root), input_size=32))
    return segmentation(cfg, SegmentRules(**rules))


def test_ade_layout_gives_the_pairs_classes_and_normalised_images(tmp_path):
    write_ade(tmp_path, names=["sky", "road", "tree"])
    data = load(tmp_path)
    assert (len(data.train), len(data.val), data.classes, data.rank) == (6, 2,
                                                                         ["sky", "road", "tree"], 2)
    x, label = data.train.load(0, 0)
    assert x.shape == (3, 40, 52) and label.shape == (40, 52) and label.dtype == torch.int64
    assert abs(float(x.mean())) < 3  # ImageNet-normalised, not 0..255


def test_mmseg_names_and_a_held_out_fraction(tmp_path):
    write_ade(tmp_path, counts=(8, 0), folders=(("img_dir", "train"), ("ann_dir", "train"),
                                                ("img_dir", "val"), ("ann_dir", "val")))
    cfg = resolve_segment(ImageEvalDataConfig(root=str(tmp_path), input_size=32,
                                              val_fraction=0.25))
    data = segmentation(cfg, SegmentRules())
    assert (len(data.train), len(data.val)) == (6, 2)
    assert data.classes == ["class_0", "class_1", "class_2"]  # the largest id + 1


def test_a_list_file_of_pairs(tmp_path):
    write_ade(tmp_path)
    lines = [f"images/training/s{i}.png,annotations/training/s{i}.png" for i in range(6)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines + ["images/training/gone.png,x.png"]))
    cfg = resolve_segment(ImageEvalDataConfig(root=str(tmp_path), input_size=32,
                                              labels=str(tmp_path / "pairs.txt")))
    data = segmentation(cfg, SegmentRules())
    assert len(data.train) + len(data.val) == 6


def test_every_misfit_is_left_out_counted_and_named(tmp_path, caplog):
    write_ade(tmp_path, counts=(8, 2), names=["a", "b", "c"])
    train_images, train_labels = tmp_path / "images/training", tmp_path / "annotations/training"
    Image.fromarray(np.zeros((40, 50), np.uint8), mode="L").save(train_labels / "s0.png")
    Image.fromarray(np.zeros((40, 52, 3), np.uint8)).save(train_labels / "s1.png")  # RGB
    Image.fromarray(np.full((40, 52), 7, np.uint8), mode="L").save(train_labels / "s2.png")
    Image.fromarray(np.full((40, 52), 255, np.uint8), mode="L").save(train_labels / "s3.png")
    (train_images / "s4.png").rename(train_images / "lonely.png")  # s4's label now alone
    with caplog.at_level(logging.WARNING):
        data = load(tmp_path)
    text = caplog.text
    assert "annotation of another size than its image" in text and "s0.png" in text
    assert "RGB annotation" in text and "s1.png" in text
    assert "class id at or above 3" in text and "s2.png: id 7" in text
    assert "1 image without an annotation" in text and "lonely.png" in text
    assert "1 annotation without an image" in text and "s4.png" in text
    # s3 (all ignore) and s5..s7 stay: 8 - s0, s1, s2, s4
    assert sorted(p[0].name for p in data.train.pairs) == ["s3.png", "s5.png", "s6.png",
                                                          "s7.png"]


def test_a_second_scan_reads_only_the_annotations_that_changed(tmp_path, monkeypatch, caplog):
    """The checks of every pair are kept in mim's cache: a second scan of the same set reads
    no annotation and finds the same pairs, refusals and class count; an annotation rewritten
    since is read again; other rules are another entry."""
    from mim.data import segmentation as core
    from mim.modalities.image import segment as image_segment

    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    write_ade(tmp_path / "set", counts=(6, 2))
    labels = tmp_path / "set" / "annotations" / "training"
    Image.fromarray(np.zeros((40, 52, 3), np.uint8)).save(labels / "s1.png")  # RGB: refused
    read = []
    real = image_segment.read_label
    monkeypatch.setattr(image_segment, "read_label", lambda p: read.append(p.name) or real(p))

    def scanned():
        read.clear()
        with caplog.at_level(logging.INFO):
            caplog.clear()
            data = load(tmp_path / "set")
        return [p[0].name for p in data.train.pairs], data.classes, sorted(read), caplog.text

    pairs, classes, first_reads, _ = scanned()
    assert len(first_reads) == 8 and "s1.png" not in pairs and len(pairs) == 5
    again, classes_again, reads, text = scanned()
    assert (again, classes_again, reads) == (pairs, classes, [])
    assert "6 pairs of 6 checked as in an earlier run" in text
    assert "RGB annotation" in text and "s1.png" in text  # a cached refusal is said again
    Image.fromarray(np.full((40, 52), 9, np.uint8), mode="L").save(labels / "s2.png")
    again, classes_again, reads, _ = scanned()
    assert reads == ["s2.png"] and len(classes_again) == 10  # the new largest id, 9, counts
    cached = list((tmp_path / "cache" / "segment_scan").glob("*.json"))
    assert len(cached) == 2  # the training and the held-out pairs
    read.clear()
    load(tmp_path / "set", reduce_zero_label=True)
    assert len(read) == 8 and core.SCAN_VERSION >= 1  # other rules: read again


def test_reduce_zero_label_as_mmseg():
    label = np.array([[0, 1, 2], [255, 150, 3]])
    assert reduce_zero(label, 255).tolist() == [[255, 0, 1], [255, 149, 2]]


def test_training_views_keep_image_and_label_aligned():
    rng = np.random.default_rng(1)
    label = torch.from_numpy(rng.integers(0, 5, size=(30, 45)))
    x = torch.stack([label.float(), -label.float()])  # [2, H, W]: the image is the label
    for seed in range(20):
        cx, cl = training_view(x, label, (32, 32), seed, (1.0, 1.0), (0.0, 0.5), 0.0, 255)
        assert cx.shape == (2, 32, 32) and cl.shape == (32, 32)
        labelled = cl != 255
        assert torch.equal(cx[0][labelled], cl[labelled].float())
        assert torch.all(cx[0][~labelled] == 0)  # padding: 0 in the image, ignore in the label
        assert labelled.sum() == 30 * 32  # 30 rows of the 32 are the image's
    big, big_label = training_view(x, label, (16, 16), 3, (2.0, 2.0), (), 0.0, 255)
    assert torch.equal(big[0].round(), big[0]) or big.shape == (2, 16, 16)


def test_a_time_stack_is_cut_as_each_of_its_dates():
    """x [C, T, H, W]: the same rescale, crop and flips on every date as on one date alone."""
    rng = np.random.default_rng(2)
    label = torch.from_numpy(rng.integers(0, 4, size=(30, 45)))
    stack = torch.from_numpy(rng.normal(size=(2, 3, 30, 45))).float()  # [C, T, H, W]
    for seed in range(8):
        cut, cut_label = training_view(stack, label, (24, 24), seed, (0.7, 1.4), (0.5, 0.5),
                                       0.0, 255)
        assert cut.shape == (2, 3, 24, 24) and cut_label.shape == (24, 24)
        for date in range(3):
            alone, alone_label = training_view(stack[:, date], label, (24, 24), seed,
                                               (0.7, 1.4), (0.5, 0.5), 0.0, 255)
            assert torch.allclose(cut[:, date], alone, atol=1e-6)
            assert torch.equal(cut_label, alone_label)


def test_a_stack_in_one_file_reads_as_the_same_stack_in_a_folder(tmp_path):
    """data.stack=file (T x C bands, date-major) and data.stack=folder (a raster per date,
    named by date) give the same [C, T, H, W] sample and label."""
    import tifffile

    rng = np.random.default_rng(3)
    dates = ("20200101", "20200301", "20200601")
    for form in ("file", "folder"):
        for split in ("training", "validation"):
            (tmp_path / form / "annotations" / split).mkdir(parents=True)
    for split, count in (("training", 3), ("validation", 1)):
        for i in range(count):
            values = rng.integers(0, 4000, size=(3, 2, 20, 24)).astype(np.uint16)  # [T, C, ..]
            label = rng.integers(0, 3, size=(20, 24)).astype(np.uint8)
            images = tmp_path / "file" / "images" / split
            images.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(images / f"p{i}.tif", values.reshape(6, 20, 24),
                             photometric="minisblack", planarconfig="separate")
            for step, date in enumerate(dates):  # out of order on disk: named by date
                folder = tmp_path / "folder" / "images" / split / f"p{i}"
                folder.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(folder / f"{2 - step}_{date}.tif", values[step],
                                 photometric="minisblack", planarconfig="separate")
            for form in ("file", "folder"):
                Image.fromarray(label, mode="L").save(
                    tmp_path / form / "annotations" / split / f"p{i}.png")
    samples = {}
    for form in ("file", "folder"):
        cfg = resolve_segment(ImageEvalDataConfig(
            root=str(tmp_path / form), input_size=16, time_steps=3, stack=form,
            mean=[0.0, 0.0], std=[1.0, 1.0]))
        data = segmentation(cfg, SegmentRules())
        assert (len(data.train), len(data.val), data.rank) == (3, 1, 2)
        samples[form] = data.val.load(0, 0)
    (x, label), (y, again) = samples["file"], samples["folder"]
    assert x.shape == (2, 3, 20, 24) and torch.equal(x, y) and torch.equal(label, again)


def test_foreground_crops_hold_a_labelled_pixel():
    label = torch.zeros(64, 64, dtype=torch.long)
    label[50:53, 5:8] = 2
    x = torch.zeros(1, 64, 64)
    for seed in range(10):
        _, crop = training_view(x, label, (16, 16), seed, (1.0, 1.0), (), 1.0, 255)
        assert (crop == 2).any()


def _volume_set(root, shapes, spacings=None):
    (root / "imagesTr").mkdir(parents=True), (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i, shape in enumerate(shapes):
        image = rng.normal(size=shape).astype(np.float32)
        label = rng.integers(0, 3, size=shape[-3:] if isinstance(shape[0], int) else shape)
        spacing = (spacings or {}).get(i)
        np.savez(root / "imagesTr" / f"v{i}.npz", image=image,
                 spacing=np.array(spacing or (1.0, 1.0, 1.0)))
        np.savez(root / "labelsTr" / f"v{i}.npz", image=label.astype(np.uint8),
                 spacing=np.array((1.0, 1.0, 1.0)))
        entries.append({"image": f"./imagesTr/v{i}.npz", "label": f"./labelsTr/v{i}.npz"})
    return entries


def test_decathlon_layout_and_its_misfits(tmp_path, caplog):
    entries = _volume_set(tmp_path, [(20, 24, 18)] * 6, spacings={1: (2.0, 1.0, 1.0)})
    np.savez(tmp_path / "labelsTr" / "v2.npz", image=np.zeros((20, 24, 17), np.uint8))
    entries.append({"image": "./imagesTr/missing.npz", "label": "./labelsTr/missing.npz"})
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "test", "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "training": entries}))
    cfg = VolumeEvalDataConfig(root=str(tmp_path), input_size=[16, 16, 16], val_fraction=0.2)
    with caplog.at_level(logging.WARNING):
        data = volume_segment.segmentation(cfg, SegmentRules())
    assert data.classes == ["background", "liver", "tumour"] and data.rank == 3
    text = caplog.text
    assert "1 listed pairs with a missing file" in text and "missing.npz" in text
    assert "2 pairs skipped, volume and label of other shapes or spacings" in text
    assert "v1.npz" in text  # the first of the two (v1's spacing, v2's shape) is named
    assert len(data.train) + len(data.val) == 4
    x, label = data.train.load(0, 0)
    assert x.shape == (1, 20, 24, 18) and label.shape == (20, 24, 18)


def test_decathlon_without_manifest_pairs_by_name(tmp_path):
    _volume_set(tmp_path, [(12, 12, 12)] * 4)
    cfg = VolumeEvalDataConfig(root=str(tmp_path), input_size=[8, 8, 8])
    data = volume_segment.segmentation(cfg, SegmentRules(num_classes=3))
    assert len(data.train) + len(data.val) == 4 and data.classes[2] == "class_2"


def test_a_folder_without_the_layout_is_named(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(FileNotFoundError, match="ADE20K"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="imagesTr"):
        volume_segment.segmentation(VolumeEvalDataConfig(root=str(tmp_path)), SegmentRules())
