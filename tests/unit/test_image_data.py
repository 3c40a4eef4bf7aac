"""The image folder: recursive scan, every PIL mode to RGB, broken files skipped with a reason."""
from __future__ import annotations

from pathlib import Path

import mim  # noqa: F401
import numpy as np
import pytest
import torch
from PIL import Image

from mim.data import UnreadableSample
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset, to_rgb
from mim.modalities.image.transforms import PretrainTransform

SIZE = 32


def noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    root = tmp_path_factory.mktemp("images")
    (root / "a_sub" / "deeper").mkdir(parents=True)
    (root / "broken").mkdir()
    good = {name: root / rel for name, rel in {
        "rgb": "rgb.jpg", "rgba": "a_sub/rgba.png", "palette": "a_sub/deeper/palette.png",
        "gray": "gray.png", "i16": "i16.png", "one_pixel": "one_pixel.png"}.items()}
    Image.fromarray(noise(40, 50)).save(good["rgb"], quality=90)
    Image.fromarray(noise(33, 47, 4, seed=1), mode="RGBA").save(good["rgba"])
    Image.fromarray(noise(36, 36, seed=2)).convert("P", palette=Image.ADAPTIVE).save(
        good["palette"])
    Image.fromarray(noise(64, 20, 1, seed=3), mode="L").save(good["gray"])
    wide = np.random.default_rng(4).integers(0, 65536, (30, 30), dtype=np.uint16)
    Image.fromarray(wide).save(good["i16"])
    Image.new("RGB", (1, 1), (200, 10, 30)).save(good["one_pixel"])
    assert Image.open(good["i16"]).mode == "I;16"
    assert Image.open(good["palette"]).mode == "P"

    broken = {"truncated": root / "broken" / "truncated.jpg", "empty": root / "broken" / "empty.png",
              "text": root / "broken" / "text.jpg"}
    whole = good["rgb"].read_bytes()
    broken["truncated"].write_bytes(whole[: len(whole) // 2])
    broken["empty"].write_bytes(b"")
    broken["text"].write_text("this is not a picture\n" * 20)
    (root / "notes.txt").write_text("not an image extension")
    Image.fromarray(noise(8, 8)).save(root / ".hidden.png")
    return root, good, broken


def test_scan_is_recursive_and_filters(image_tree):
    root, good, broken = image_tree
    ds = build_dataset(ImageDataConfig(root=str(root), input_size=SIZE))
    assert set(ds.files) == set(good.values()) | set(broken.values())
    assert len(ds) == 9 and ds.labels == [-1] * 9


def test_every_index_loads_and_broken_files_are_reported(image_tree):
    root, good, broken = image_tree
    ds = build_dataset(ImageDataConfig(root=str(root), input_size=SIZE))
    reasons: dict[str, str] = {}
    for index in range(len(ds)):
        sample = ds[(index, 1000 + index)]
        assert sample.x.shape == (3, SIZE, SIZE) and sample.x.dtype == torch.float32
        assert torch.isfinite(sample.x).all()
        if ds.files[index] in good.values() and ds.files[index] != good["i16"]:
            assert sample.skipped == []
        else:
            assert sample.skipped and sample.skipped[0][0] == str(ds.files[index])
        reasons.update(dict(sample.skipped))
    # a folder of photos: the one 16-bit PNG is data, skipped and named, never rescaled
    assert set(reasons) == {str(p) for p in broken.values()} | {str(good["i16"])}
    assert "data.reader=raster" in reasons[str(good["i16"])]
    assert "empty" in reasons[str(broken["empty"])]
    assert "truncated" in reasons[str(broken["truncated"])]
    assert all(reason.strip() for reason in reasons.values())


def test_modes_become_rgb(image_tree):
    _, good, _ = image_tree
    for path in (p for name, p in good.items() if name != "i16"):
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(image)
        assert rgb.mode == "RGB" and rgb.size == Image.open(path).size
    with Image.open(good["i16"]) as image, pytest.raises(UnreadableSample, match="raster"):
        to_rgb(image)  # 16-bit data is never squeezed into 8 bits among photos
    with Image.open(good["palette"]) as image:
        expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(np.asarray(to_rgb(image)), expected)


def test_transform_is_a_function_of_the_seed():
    image = Image.fromarray(noise(80, 96, seed=7))
    transform = PretrainTransform(ImageDataConfig(input_size=SIZE))
    first = transform(image, 12345)
    assert first.shape == (3, SIZE, SIZE)
    assert torch.equal(first, transform(image, 12345))
    others = [transform(image, seed) for seed in range(8)]
    assert sum(not torch.equal(first, o) for o in others) >= 7
    assert len({o.sum().item() for o in others}) > 1


def test_normalisation_uses_mean_and_std():
    image = Image.new("RGB", (40, 40), (255, 0, 128))
    cfg = ImageDataConfig(input_size=SIZE, mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 1.0])
    x = PretrainTransform(cfg)(image, 0)
    expected = torch.tensor([(1 - 0.5) / 0.5, (0 - 0.5) / 0.25, (128 / 255 - 0.5) / 1.0])
    torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)


def test_folder_labels(tmp_path):
    layout = {"cat/x.png": 0, "cat/y.png": 0, "dog/nested/z.png": 1, "emu/w.jpg": 2}
    for rel in layout:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noise(12, 12)).save(tmp_path / rel)
    ds = build_dataset(ImageDataConfig(root=str(tmp_path), input_size=8, labels="folders"))
    assert ds.classes == ["cat", "dog", "emu"]
    got = {str(f.relative_to(tmp_path)): label for f, label in zip(ds.files, ds.labels)}
    assert got == layout
    for index in range(len(ds)):
        assert ds[(index, 0)].label == ds.labels[index]


def test_missing_or_empty_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        build_dataset(ImageDataConfig(root=str(tmp_path / "nowhere"), input_size=8))
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="no image files"):
        build_dataset(ImageDataConfig(root=str(tmp_path), input_size=8))
