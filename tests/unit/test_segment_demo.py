"""The built-in labelled segmentation demo sets: the 2D textured scenes (ADE20K's layout,
modalities/image/segment_demo.py) and the labelled volume phantoms (the Medical Segmentation
Decathlon's layout, modalities/volume/demo.py's decathlon_folder)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from mim.modalities.image import segment_demo
from mim.modalities.volume import demo as volume_demo
from mim.modalities.volume.dataset import read_volume

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The 2D set, written once into a temporary MIM_CACHE_DIR."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield segment_demo.segment_demo_folder()


@pytest.fixture(scope="module")
def decathlon(tmp_path_factory):
    """The volume set, written once into a temporary MIM_CACHE_DIR."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield volume_demo.decathlon_folder()


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _read(path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


# -- 2D ------------------------------------------------------------------------------------------
def test_scenes_are_written_once_deterministically(scenes, tmp_path, monkeypatch):
    assert scenes.name == segment_demo.VERSION and scenes.parent.name == "demo_segment"
    assert [p.name for p in scenes.parent.iterdir()] == [segment_demo.VERSION]  # no leftovers
    stamp = {p: p.stat().st_mtime_ns for p in scenes.rglob("*")}
    monkeypatch.setenv("MIM_CACHE_DIR", str(scenes.parents[1]))
    assert segment_demo.segment_demo_folder() == scenes  # second use: nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in scenes.rglob("*")} == stamp
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    again = segment_demo.segment_demo_folder()
    assert again == tmp_path / "demo_segment" / segment_demo.VERSION
    assert _files(again) == _files(scenes)  # byte-identical


def test_scene_layout_sizes_and_classes(scenes, monkeypatch):
    assert (scenes / "classes.txt").read_text().splitlines() == list(segment_demo.CLASSES)
    assert segment_demo.CLASSES[0] == "background" and 6 <= len(segment_demo.CLASSES) <= 8
    counts = {"training": segment_demo.TRAINING_COUNT, "validation": segment_demo.VALIDATION_COUNT}
    for split, count in counts.items():
        images = sorted((scenes / "images" / split).iterdir())
        annotations = sorted((scenes / "annotations" / split).iterdir())
        assert [p.name for p in images] == [p.name for p in annotations]
        assert [p.name for p in images] == [f"scene_{i:04d}.png" for i in range(count)]
        seen = np.zeros(len(segment_demo.CLASSES), np.int64)
        for image_path, label_path in zip(images, annotations):
            image, label = _read(image_path), _read(label_path)
            assert image.mode == "RGB" and label.mode == "L" and image.size == label.size
            w, h = image.size
            assert 72 <= w <= 120 and 72 <= h <= 120 and w % 8 and h % 8, image_path.name
            ids = np.asarray(label)
            assert ids.max() < len(segment_demo.CLASSES)
            seen += np.bincount(ids.ravel(), minlength=len(segment_demo.CLASSES))
        assert (seen > 0).all(), f"{split}: classes that never occur: {seen}"
        assert seen[0] / seen.sum() < 0.7  # the shapes are not a rare foreground
    sizes = {_read(p).size for p in (scenes / "images" / "training").iterdir()}
    assert len(sizes) > 50  # sizes vary
    pixels, labels = segment_demo.scene("validation", 3)
    np.testing.assert_array_equal(pixels, np.asarray(_read(scenes / "images" / "validation"
                                                          / "scene_0003.png")))
    np.testing.assert_array_equal(labels, np.asarray(_read(scenes / "annotations" / "validation"
                                                          / "scene_0003.png")))
    monkeypatch.setenv("MIM_CACHE_DIR", str(scenes.parents[1]))
    root, files = segment_demo.training_images()
    assert root == scenes / "images" / "training" and len(files) == segment_demo.TRAINING_COUNT
    assert files == sorted(files) and all(f.parent == root for f in files)


def _pixels(scenes, split):
    colours, ids = [], []
    for path in sorted((scenes / "images" / split).iterdir()):
        colours.append(np.asarray(_read(path), np.float64).reshape(-1, 3))
        ids.append(np.asarray(_read(scenes / "annotations" / split / path.name)).reshape(-1))
    return np.concatenate(colours), np.concatenate(ids)


def test_colour_alone_does_not_separate_the_classes(scenes):
    """Per-pixel classifiers of the colour alone, fitted on the training pixels and scored on
    the validation ones, stay far from separating the classes: nearest class-mean colour
    (measured 0.17) and a per-class Gaussian of the colour (measured 0.46, about the share
    of background pixels, 0.45)."""
    k = len(segment_demo.CLASSES)
    colours, ids = _pixels(scenes, "training")
    test_colours, test_ids = _pixels(scenes, "validation")
    means = np.stack([colours[ids == c].mean(0) for c in range(k)])  # [K, 3]
    distance = ((test_colours[:, None, :] - means[None]) ** 2).sum(-1)  # [N, K]
    nearest = (distance.argmin(1) == test_ids).mean()
    assert nearest < 0.9, f"nearest class-mean colour: pixel accuracy {nearest:.3f}"
    scores = []
    for c in range(k):
        own = colours[ids == c]
        cov = np.cov(own.T) + 1e-3 * np.eye(3)
        d = test_colours - own.mean(0)
        scores.append(-0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
                      - 0.5 * np.linalg.slogdet(cov)[1] + np.log(len(own) / len(ids)))
    gaussian = (np.argmax(np.stack(scores, 1), 1) == test_ids).mean()
    assert gaussian < 0.75, f"Gaussian colour classifier: pixel accuracy {gaussian:.3f}"


# -- 3D ------------------------------------------------------------------------------------------
def test_decathlon_layout_and_dataset_json(decathlon):
    assert decathlon.name == volume_demo.DECATHLON_VERSION
    assert decathlon.parent.name == "decathlon" and decathlon.parents[1].name == "demo_volume"
    assert [p.name for p in decathlon.parent.iterdir()] == [decathlon.name]  # no leftovers
    meta = json.loads((decathlon / "dataset.json").read_text())
    assert {"name", "labels", "modality", "numTraining", "numTest", "training",
            "test"} <= set(meta)
    assert meta["labels"] == {str(i): n for i, n in enumerate(volume_demo.SEGMENT_LABELS)}
    assert meta["labels"]["0"] == "background" and meta["modality"] == {"0": "CT"}
    assert meta["numTraining"] == len(meta["training"]) == volume_demo.DECATHLON_TRAINING
    assert meta["numTest"] == len(meta["test"]) == volume_demo.DECATHLON_TEST
    assert 24 <= meta["numTraining"] <= 32
    listed = {e["image"] for e in meta["training"]} | {e["label"] for e in meta["training"]}
    listed |= set(meta["test"])
    on_disk = {f"./{p.relative_to(decathlon).as_posix()}" for p in decathlon.rglob("*.nii.gz")}
    assert listed == on_disk
    seen, shapes = set(), set()
    for entry in meta["training"]:
        assert entry["image"].startswith("./imagesTr/") and entry["label"].startswith(
            "./labelsTr/") and entry["image"].split("/")[-1] == entry["label"].split("/")[-1]
        image, label = nib.load(decathlon / entry["image"]), nib.load(decathlon / entry["label"])
        assert image.shape == label.shape and len(image.shape) == 3
        np.testing.assert_array_equal(image.affine, label.affine)
        assert image.header.get_zooms() == label.header.get_zooms()
        assert np.issubdtype(label.get_data_dtype(), np.integer)
        ids = np.unique(np.asarray(label.dataobj))
        assert {str(int(i)) for i in ids} <= set(meta["labels"]), entry
        seen |= {int(i) for i in ids}
        assert all(32 <= n <= 48 for n in image.shape) and len(set(image.shape)) > 1
        shapes.add(image.shape)
    assert seen == set(range(len(volume_demo.SEGMENT_LABELS)))  # every label occurs
    assert len(shapes) > 10 and any(n % 16 for s in shapes for n in s)
    zooms = nib.load(decathlon / meta["training"][2]["image"]).header.get_zooms()
    assert tuple(float(z) for z in zooms) == (1.0, 1.0, 1.5)  # 1.5 mm slices ([X, Y, Z])
    for rel in meta["test"]:
        assert rel.startswith("./imagesTs/") and not (decathlon / "labelsTr"
                                                     / rel.split("/")[-1]).exists()


def test_decathlon_reads_back_as_the_phantoms(decathlon, tmp_path, monkeypatch):
    """The modality's reader sees [D, H, W] and the spacing labelled_phantom gave; a volume and
    its labels are encoded byte for byte as written; a second use rewrites nothing."""
    for index in (0, 2, 5):
        volume, labels, spacing = volume_demo.labelled_phantom(index)
        again = volume_demo.labelled_phantom(index)
        np.testing.assert_array_equal(volume, again[0])
        np.testing.assert_array_equal(labels, again[1])
        name = f"phantom_{index:03d}.nii.gz"
        image, image_spacing = read_volume(decathlon / "imagesTr" / name, 1)
        label, label_spacing = read_volume(decathlon / "labelsTr" / name, 1)
        assert image_spacing == label_spacing == spacing
        np.testing.assert_array_equal(image[0], volume)
        np.testing.assert_array_equal(label[0], labels)
        assert (decathlon / "imagesTr" / name).read_bytes() == volume_demo._nifti_bytes(
            nib, volume, spacing)
        assert (decathlon / "labelsTr" / name).read_bytes() == volume_demo._nifti_bytes(
            nib, labels, spacing)
    stamp = {p: p.stat().st_mtime_ns for p in decathlon.rglob("*")}
    monkeypatch.setenv("MIM_CACHE_DIR", str(decathlon.parents[2]))
    assert volume_demo.decathlon_folder() == decathlon
    assert {p: p.stat().st_mtime_ns for p in decathlon.rglob("*")} == stamp


def test_decathlon_without_nibabel_writes_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    monkeypatch.setattr(volume_demo, "DECATHLON_TRAINING", 2)
    monkeypatch.setattr(volume_demo, "DECATHLON_TEST", 1)
    folder = volume_demo.decathlon_folder()
    assert folder.name == f"{volume_demo.DECATHLON_VERSION}-npz"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["training"][1] == {"image": "./imagesTr/phantom_001.npz",
                                   "label": "./labelsTr/phantom_001.npz"}
    assert meta["test"] == ["./imagesTs/phantom_002.npz"]
    volume, labels, spacing = volume_demo.labelled_phantom(1)
    image, image_spacing = read_volume(folder / "imagesTr" / "phantom_001.npz", 1)
    label, label_spacing = read_volume(folder / "labelsTr" / "phantom_001.npz", 1)
    assert image_spacing == label_spacing == spacing
    np.testing.assert_array_equal(image[0], volume)
    np.testing.assert_array_equal(label[0], labels)


def test_the_classification_demo_is_untouched(tmp_path, monkeypatch):
    """The phantoms of ``data.demo`` keep their place and their kinds beside the segmentation
    set."""
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    assert volume_demo.decathlon_dir().parent == volume_demo.cache_dir().parent
    assert volume_demo.decathlon_dir() != volume_demo.cache_dir()
    volume, spacing, kind = volume_demo.phantom(3)
    assert volume.shape == (40, 72, 72) and spacing == (1.6, 1.0, 1.0) and kind == 0


def test_intensity_alone_does_not_tell_the_structures_apart():
    """A per-voxel classifier of the intensity alone (a Gaussian per structure, fitted on 20
    phantoms, scored on 8 others) tells organ, vessel and lesion apart no better than chance
    (balanced accuracy 1/3; measured 0.33, where the first version of the set, whose
    structures differed in brightness, gave 0.79): their textures tell them apart."""
    def voxels(indices):
        pairs = [volume_demo.labelled_phantom(i)[:2] for i in indices]
        return (np.concatenate([v.ravel() for v, _ in pairs]).astype(np.float64),
                np.concatenate([l.ravel() for _, l in pairs]))

    values, ids = voxels(range(20))
    test_values, test_ids = voxels(range(20, 28))
    scores = []
    for c in (1, 2, 3):
        own = values[ids == c]
        scores.append(-0.5 * ((test_values - own.mean()) / own.std()) ** 2 - np.log(own.std())
                      + np.log((ids == c).mean()))
    pred = np.argmax(np.stack(scores, 1), 1) + 1
    balanced = np.mean([(pred[test_ids == c] == c).mean() for c in (1, 2, 3)])
    assert balanced < 0.45, f"intensity alone: balanced accuracy {balanced:.3f}"


def test_the_segmentation_images_are_a_pretraining_set(tmp_path, monkeypatch):
    """data.demo=segment: the 32 labelled phantoms' images (training and test), unlabelled."""
    from mim.modalities.volume.config import VolumeDataConfig
    from mim.modalities.volume.dataset import build_dataset

    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    data = build_dataset(VolumeDataConfig(demo="segment", input_size=[32, 32, 32]))
    total = volume_demo.DECATHLON_TRAINING + volume_demo.DECATHLON_TEST
    assert len(data) == total and set(data.labels) == {-1}
    assert {p.parent.name for p in data.files} == {"imagesTr", "imagesTs"}
    assert data.load(0, 0)[0].shape == (1, 32, 32, 32)
    with pytest.raises(ValueError, match="data.demo: 'scans' is not one of: phantoms, segment"):
        VolumeDataConfig(demo="scans")
