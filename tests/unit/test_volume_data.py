"""The volume modality: readers, normalisation, resampling, seeded crops, broken files, demo."""
from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import mim.models.factory
import numpy as np
import pytest
import torch
from PIL import Image

from mim.data import MaskingCollate, UnreadableSample
from mim.masking import build_mask
from mim.modalities.volume import SPEC
from mim.modalities.volume import demo as demo_module
from mim.modalities.volume.config import VolumeDataConfig
from mim.modalities.volume.dataset import NIFTI_HINT, build_dataset, read_volume
from mim.modalities.volume.transforms import VolumeTransform, normalise
from mim.modalities.volume.pictures import render
from mim.spec import Panels

HAS_NIBABEL = importlib.util.find_spec("nibabel") is not None
SIZE = [16, 16, 16]


def ramp(shape, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise, scanner-like values (float32)."""
    grid = np.indices(shape).sum(0).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 5, shape).astype(np.float32)
    return grid * 10.0 - 300.0 + noise


def save_nifti(path: Path, array: np.ndarray, zooms) -> None:
    import nibabel as nib
    nib.save(nib.Nifti1Image(array, np.diag([*zooms, 1.0])), str(path))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, Path], dict[str, tuple[Path, str]]]:
    """good/: readable single-channel volumes; broken/: (path, word its reason must contain)."""
    root = tmp_path_factory.mktemp("volumes")
    for folder in ("good/deeper", "broken"):
        (root / folder).mkdir(parents=True)
    good = {"npy": root / "good" / "plain.npy", "int16": root / "good" / "deeper" / "ct.npy",
            "npz": root / "good" / "spaced.npz", "data_key": root / "good" / "data_key.npz",
            "single": root / "good" / "single.npz", "c1": root / "good" / "c1.npy",
            "small": root / "good" / "small.npy"}
    np.save(good["npy"], ramp((20, 24, 28)))
    np.save(good["int16"], ramp((18, 18, 18), 1).astype(np.int16))
    np.savez(good["npz"], image=ramp((10, 24, 24), 2), spacing=np.array([2.0, 1.0, 1.0]))
    np.savez_compressed(good["data_key"], data=ramp((16, 16, 16), 3))
    np.savez(good["single"], volume=ramp((17, 19, 16), 4))
    np.save(good["c1"], ramp((1, 16, 20, 16), 5))  # channel-first with C = 1
    np.save(good["small"], ramp((6, 9, 30), 6))  # padded on two axes
    if HAS_NIBABEL:
        good["nifti"] = root / "good" / "scan.nii.gz"
        save_nifti(good["nifti"], ramp((12, 14, 16), 7), (1.5, 1.0, 2.0))

    b = root / "broken"
    nan = ramp((16, 16, 16))
    nan[3, 4, 5] = np.nan
    inf = ramp((16, 16, 16))
    inf[0, 0, 0] = np.inf
    np.save(b / "nan.npy", nan)
    np.save(b / "inf.npy", inf)
    np.save(b / "flat2d.npy", ramp((16, 16)))
    np.save(b / "five_d.npy", ramp((1, 1, 8, 8, 8)))
    np.save(b / "empty_array.npy", np.zeros((0, 16, 16), np.float32))
    np.save(b / "three_channels.npy", ramp((3, 8, 8, 8)))
    (b / "zero_bytes.npy").write_bytes(b"")
    whole = (b / "nan.npy").read_bytes()
    (b / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    (b / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    (b / "text.npy").write_text("this is not an array\n" * 20)
    np.savez(b / "two_arrays.npz", a=np.zeros((8, 8, 8)), b=np.ones((8, 8, 8)))
    np.savez(b / "bad_spacing.npz", image=ramp((8, 8, 8)), spacing=np.array([1.0, -1.0]))
    (b / "corrupt.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    if HAS_NIBABEL:  # a real header whose voxel data is cut short
        save_nifti(b / "truncated.nii.gz", ramp((16, 16, 16)), (1.0, 1.0, 1.0))
        data = gzip.decompress((b / "truncated.nii.gz").read_bytes())
        (b / "truncated.nii.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    (root / "notes.txt").write_text("not a volume")
    np.save(root / ".hidden.npy", ramp((8, 8, 8)))  # hidden files are ignored
    broken = {"nan": (b / "nan.npy", "contains NaN"), "inf": (b / "inf.npy", "contains Inf"),
              "2d": (b / "flat2d.npy", "2D array"), "5d": (b / "five_d.npy", "5D array"),
              "empty_array": (b / "empty_array.npy", "empty array"),
              "channels": (b / "three_channels.npy", "3 channels"),
              "zero_bytes": (b / "zero_bytes.npy", "empty file (0 bytes)"),
              "truncated": (b / "truncated.npy", "truncated"),
              "random_npz": (b / "random.npz", "not a valid .npz"),
              "text": (b / "text.npy", "not a NumPy .npy file"),
              "two_arrays": (b / "two_arrays.npz", "single array"),
              "bad_spacing": (b / "bad_spacing.npz", "bad spacing"),
              "corrupt_nifti": (b / "corrupt.nii.gz", "damaged NIfTI" if HAS_NIBABEL
                                else "pip install mim-pretrain[nifti]")}
    if HAS_NIBABEL:
        broken["truncated_nifti"] = (b / "truncated.nii.gz", "damaged NIfTI")
    return root, good, broken


def config(root: Path | None = None, **overrides) -> VolumeDataConfig:
    return VolumeDataConfig(root=str(root) if root else None, **{"input_size": SIZE, **overrides})


def test_scan_finds_every_volume_recursively(tree):
    root, good, broken = tree
    ds = build_dataset(config(root))
    assert set(ds.files) == set(good.values()) | {p for p, _ in broken.values()}
    assert ds.labels == [-1] * len(ds.files)


def test_broken_files_are_skipped_with_path_and_reason_and_counted(tree):
    root, good, broken = tree
    ds = build_dataset(config(root))
    reasons: dict[str, str] = {}
    samples = []
    for index in range(len(ds)):
        sample = ds[(index, 100 + index)]
        assert sample.x.shape == (1, *SIZE) and sample.x.dtype == torch.float32
        assert torch.isfinite(sample.x).all()
        if ds.files[index] in good.values():
            assert sample.skipped == [], sample.skipped
        else:
            assert sample.skipped[0][0] == str(ds.files[index])
        reasons.update(dict(sample.skipped))
        samples.append((sample, index))
    assert set(reasons) == {str(p) for p, _ in broken.values()}
    for name, (path, word) in broken.items():
        assert word in reasons[str(path)], (name, reasons[str(path)])
    # the collate carries every skip to the loop, which counts them
    batch = MaskingCollate(build_mask("random"), (2, 2, 2))(samples)
    assert {p for p, _ in batch.skipped} == set(reasons)


def test_missing_nibabel_skips_nifti_with_install_hint(tree, monkeypatch):
    root, _, broken = tree
    monkeypatch.setitem(sys.modules, "nibabel", None)  # ``import nibabel`` -> ImportError
    with pytest.raises(UnreadableSample) as info:
        read_volume(broken["corrupt_nifti"][0], 1)
    assert str(info.value) == NIFTI_HINT and "pip install mim-pretrain[nifti]" in NIFTI_HINT
    (only_nifti := root.parent / "only_nifti").mkdir(exist_ok=True)
    (only_nifti / "a.nii").write_bytes(b"\0" * 400)
    with pytest.raises(FileNotFoundError, match=r"data.root: 1 NIfTI .*mim-pretrain\[nifti\]"):
        build_dataset(config(only_nifti))


def test_real_nifti_axes_and_spacing(tree):
    root, good, _ = tree
    if not HAS_NIBABEL:  # no silent skip: without nibabel the hint is the documented outcome
        path = root / "good" / "fake.nii.gz"
        path.write_bytes(gzip.compress(b"\0" * 400))
        with pytest.raises(UnreadableSample, match=r"mim-pretrain\[nifti\]"):
            read_volume(path, 1)
        return
    volume, spacing = read_volume(good["nifti"], 1)
    stored = ramp((12, 14, 16), 7)  # [X, Y, Z], zooms (1.5, 1.0, 2.0)
    assert volume.shape == (1, 16, 14, 12) and spacing == (2.0, 1.0, 1.5)
    np.testing.assert_allclose(volume[0], stored.transpose(2, 1, 0), rtol=1e-6)
    prepared = VolumeTransform(config(target_spacing=[1.0, 1.0, 1.0])).prepare(volume, spacing)
    assert prepared.shape == (1, 32, 14, 18)


def test_npz_spacing_and_resampling(tree):
    _, good, _ = tree
    volume, spacing = read_volume(good["npz"], 1)  # [10, 24, 24] at 2 x 1 x 1 mm
    assert volume.shape == (1, 10, 24, 24) and spacing == (2.0, 1.0, 1.0)
    assert read_volume(good["npy"], 1)[1] == (1.0, 1.0, 1.0)  # unknown spacing: 1 mm
    for target, shape in (([1.0, 1.0, 1.0], (1, 20, 24, 24)), ([2.0, 2.0, 2.0], (1, 10, 12, 12)),
                          ([4.0, 0.5, 3.0], (1, 5, 48, 8))):
        prepared = VolumeTransform(config(target_spacing=target)).prepare(volume, spacing)
        assert prepared.shape == shape, target
    # trilinear: a linear ramp along D stays linear (up to the border), values stay in range
    ramp_d = np.tile(np.arange(10, dtype=np.float32)[None, :, None, None], (1, 1, 4, 4))
    up = VolumeTransform(config(target_spacing=[1.0, 1.0, 1.0], intensity="none")).prepare(
        ramp_d, (2.0, 1.0, 1.0))
    assert up.shape == (1, 20, 4, 4)
    np.testing.assert_allclose(np.diff(up[0, 1:-1, 0, 0]), 0.5, atol=1e-5)


def test_channel_first_arrays(tmp_path):
    np.save(tmp_path / "two.npy", ramp((2, 12, 16, 20)))
    np.savez(tmp_path / "two.npz", image=ramp((2, 10, 10, 10), 1), spacing=[1.0, 1.0, 1.0])
    np.save(tmp_path / "one.npy", ramp((12, 12, 12), 2))  # a single channel: mismatch
    ds = build_dataset(config(tmp_path, channels=2))
    assert [f.name for f in ds.files] == ["one.npy", "two.npy", "two.npz"]
    assert SPEC.sample_shape(config(channels=2)) == (2, *SIZE)
    sample = ds[(0, 7)]  # one.npy is skipped for its channel count
    assert sample.skipped[0][0].endswith("one.npy") and "1 channels" in sample.skipped[0][1]
    assert sample.x.shape == (2, *SIZE)
    # per-channel statistics: both channels z-scored on their own
    x = ds.transform.prepare(read_volume(ds.files[1], 2)[0], (1.0, 1.0, 1.0))
    assert np.allclose(x.reshape(2, -1).mean(1), 0, atol=1e-4)
    assert np.allclose(x.reshape(2, -1).std(1), 1, atol=1e-3)


def test_percentile_normalisation_statistics():
    rng = np.random.default_rng(0)
    volume = rng.normal(100.0, 20.0, (1, 20, 20, 20)).astype(np.float32)
    volume[0, 0, 0, :5] = [1e6, -1e6, 5e5, 7e5, -3e5]  # outliers are clipped away
    low, high = np.percentile(volume, [0.5, 99.5])
    x = normalise(volume, config())
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-3
    clipped = np.clip(volume, low, high)
    assert x.max() == pytest.approx((high - clipped.mean()) / clipped.std(), rel=1e-4)
    unit = normalise(volume, config(zscore=False))
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0)
    assert np.all(normalise(np.full((1, 4, 4, 4), 7.0, np.float32), config()) == 0.0)


def test_window_normalisation_statistics():
    volume = np.linspace(-1000, 1000, 8000, dtype=np.float32).reshape(1, 20, 20, 20)
    x = normalise(volume, config(intensity="window", window_min=-100.0, window_max=300.0))
    assert x.min() == 0.0 and x.max() == 1.0
    inside = (volume > -100) & (volume < 300)
    np.testing.assert_allclose(x[inside], (volume[inside] + 100) / 400, atol=1e-6)
    z = normalise(volume, config(intensity="window", window_min=-100.0, window_max=300.0,
                                 zscore=True))
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1.0) < 1e-3


def test_crop_and_flip_are_pure_functions_of_the_seed():
    volume = ramp((1, 30, 28, 26))
    transform = VolumeTransform(config())
    a, b = transform(volume, (1, 1, 1), 5), transform(volume, (1, 1, 1), 5)
    assert torch.equal(a, b) and a.shape == (1, *SIZE)
    assert any(not torch.equal(a, transform(volume, (1, 1, 1), s)) for s in range(6, 12))
    plain = VolumeTransform(config(flip=[0.0, 0.0, 0.0]))(volume, (1, 1, 1), 9)
    flipped = VolumeTransform(config(flip=[1.0, 0.0, 1.0]))(volume, (1, 1, 1), 9)
    assert torch.equal(flipped, torch.flip(plain, [1, 3]))  # same crop, flipped D and W


def test_smaller_volumes_are_padded():
    volume = ramp((1, 10, 20, 12))
    x = VolumeTransform(config(pad_value=-7.0, flip=[0, 0, 0]))(volume, (1, 1, 1), 3)
    assert x.shape == (1, *SIZE) and int((x == -7.0).sum()) == 16 ** 3 - 10 * 16 * 12
    y = VolumeTransform(config(flip=[0, 0, 0]))(volume, (1, 1, 1), 3)  # pad: the minimum
    assert float(y.min()) == pytest.approx(float(normalise(volume, config()).min()))


@pytest.mark.parametrize("overrides,key", [
    ({"input_size": [16, 16]}, "data.input_size"), ({"input_size": [0, 16, 16]}, "data.input_size"),
    ({"channels": 0}, "data.channels"), ({"intensity": "minmax"}, "data.intensity"),
    ({"p_low": 60.0, "p_high": 40.0}, "data.p_low"), ({"intensity": "window"}, "data.window_min"),
    ({"intensity": "window", "window_min": 5.0, "window_max": 1.0}, "data.window_min"),
    ({"target_spacing": [1.0, 0.0, 1.0]}, "data.target_spacing"),
    ({"flip": [0.5, 2.0, 0.5]}, "data.flip"), ({"pad_value": float("nan")}, "data.pad_value"),
])
def test_config_checks_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        config(**overrides)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="^data.root: .* is not a directory"):
        build_dataset(config(tmp_path / "nope"))
    (tmp_path / "readme.txt").write_text("no volumes here")
    with pytest.raises(FileNotFoundError, match="^data.root: no volumes"):
        build_dataset(config(tmp_path))


def test_demo_is_generated_once_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    folder = demo_module.cache_dir()
    assert folder == tmp_path / "cache" / "demo_volume" / demo_module.VERSION
    ds = build_dataset(config(target_spacing=[1.0, 1.0, 1.0]))
    assert len(ds) == demo_module.COUNT and ds.classes == list(demo_module.KINDS)
    assert sorted(set(ds.labels)) == [0, 1, 2]
    assert {f.suffix for f in ds.files} == {".npy", ".npz"}
    assert not list(folder.glob("*.tmp"))
    stamp = {f: f.stat().st_mtime_ns for f in folder.iterdir()}
    build_dataset(config())  # second use: nothing is rewritten
    assert {f: f.stat().st_mtime_ns for f in folder.iterdir()} == stamp
    again, spacing, kind = demo_module.phantom(3)
    assert spacing == (1.6, 1.0, 1.0) and again.shape == (40, 72, 72)
    np.testing.assert_array_equal(again, read_volume(ds.files[3], 1)[0][0])
    sample = ds[(3, 1)]
    assert sample.skipped == [] and sample.label == kind and torch.isfinite(sample.x).all()


def test_visualize_writes_a_montage(tmp_path):
    x = torch.randn(2, 1, 8, 12, 16)
    path = render(Panels(x, x * 0, x, x), config(), tmp_path / "step_00000001")
    assert path == tmp_path / "step_00000001.png"
    with Image.open(path) as image:  # tiles x12 in 144 x 192 cells: 2 x 3 views by 4 columns
        assert image.mode == "L" and image.size == (4 * 194 - 2, 6 * 146 - 2 + 8)


def test_spec_and_demo_experiment_compose():
    from mim.config.compose import load, token_grid

    assert SPEC.default_model == "mae3d_vit_base_patch16"
    assert mim.models.factory.model_config(SPEC.default_model).tokenizer_name == "cube"
    spec = load(["modality=volume", "experiment=volume_demo"])
    assert spec.model.name == "mae3d_vit_tiny_patch16" and spec.model.tokenizer_name == "cube"
    assert token_grid(spec)[0] == (6, 6, 6) and spec.data.input_size == [48, 48, 48]
    default = load(["modality=volume", "data.root=/data/ct"])
    assert default.model.name == "mae3d_vit_base_patch16" and token_grid(default)[0] == (6, 6, 6)


def test_a_volume_smaller_than_the_crop_is_counted_or_skipped_below_the_floor(caplog):
    tiny = np.ones((1, 1, 1, 1), np.float32)
    transform = VolumeTransform(VolumeDataConfig(input_size=[8, 8, 8]))
    with caplog.at_level("WARNING", logger="mim.data"):
        for _ in range(3):
            assert transform(tiny, (1.0, 1.0, 1.0), seed=0).shape == (1, 8, 8, 8)
    assert "1 volume smaller than the crop [8, 8, 8] padded so far" in caplog.text
    assert "2 volumes smaller than the crop" in caplog.text and "3 volumes" not in caplog.text
    floored = VolumeTransform(VolumeDataConfig(input_size=[8, 8, 8], min_size=[4, 4, 4]))
    with pytest.raises(UnreadableSample, match=r"shape \[1, 1, 1\] .* below data.min_size="):
        floored(tiny, (1.0, 1.0, 1.0), seed=0)
    assert floored(np.ones((1, 4, 6, 8), np.float32), (1.0, 1.0, 1.0), seed=0).shape == \
        (1, 8, 8, 8)  # at the floor: padded
    with pytest.raises(ValueError, match="data.min_size: three sizes"):
        VolumeDataConfig(min_size=[4, 4])
