"""The built-in multispectral demo set (modalities/image/raster_demo.py): 13-band uint16 scenes
with GDAL's tags, deterministic, balanced labelled classes that are what their folders say,
nodata as 0 in every band and only there, classes that the mean spectrum does not tell apart
but the spatial layout does, an atomic publish."""
from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile

from mim.modalities.image import raster_demo as rd

SMALL = dict(PRETRAIN_COUNT=10, PER_CLASS=2)  # a set's first scenes: the same files, fewer


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A cache dir holding the whole set, written once for the module."""
    base = tmp_path_factory.mktemp("mim_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIM_CACHE_DIR", str(base))
        rd.raster_demo_folder()
    return base


@pytest.fixture(scope="module")
def scenes(cache) -> dict[str, np.ndarray]:
    """Every file of the set (relative path -> [13, H, W] uint16), read once."""
    root = cache / "demo_raster" / rd.VERSION
    return {str(p.relative_to(root)): tifffile.imread(p) for p in sorted(root.rglob("*.tif"))}


def _labelled(scenes) -> list[tuple[str, np.ndarray]]:
    """(class folder, pixels) of every labelled scene, by scene index."""
    items = [(Path(rel), a) for rel, a in scenes.items() if rel.startswith("labelled/")]
    return [(p.parent.name, a) for p, a in sorted(items, key=lambda item: item[0].name)]


def _small(monkeypatch, base: Path) -> Path:
    monkeypatch.setenv("MIM_CACHE_DIR", str(base))
    for name, value in SMALL.items():
        monkeypatch.setattr(rd, name, value)
    return base / "demo_raster" / rd.VERSION


def test_the_bands_are_sentinel_2s_thirteen_in_order():
    assert rd.BAND_NAMES == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                             "B09", "B10", "B11", "B12")
    assert len(rd.WAVELENGTHS) == 13 and rd.WAVELENGTHS[10] == 1.375
    assert list(rd.WAVELENGTHS[:10]) == sorted(rd.WAVELENGTHS[:10])  # B8A sits after B08
    for name, signature in rd.SIGNATURES.items():
        assert len(signature) == 13 and all(0.0 <= v <= 1.0 for v in signature), name


def test_the_public_functions_find_the_set(cache, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(cache))
    folder = rd.raster_demo_folder()
    assert folder == cache / "demo_raster" / rd.VERSION
    root, files = rd.pretrain_files()
    assert root == folder / "pretrain" and len(files) == rd.PRETRAIN_COUNT
    assert files == sorted(files) and all(f.parent == root and f.suffix == ".tif" for f in files)
    labelled = rd.labelled_folder()
    assert labelled == folder / "labelled"
    assert sorted(p.name for p in labelled.iterdir()) == sorted(rd.CLASSES)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_every_file_is_13_uint16_planar_bands_with_gdals_tags(cache):
    files = sorted((cache / "demo_raster" / rd.VERSION).rglob("*.tif"))
    assert len(files) == rd.PRETRAIN_COUNT + rd.PER_CLASS * len(rd.CLASSES)
    for path in files:
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == 1
            page = tif.pages.first
            assert page.shape == (13, rd.SIZE, rd.SIZE) and page.dtype == np.uint16, path
            assert page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
            xml = page.tags["GDAL_METADATA"].value
            assert page.tags["GDAL_NODATA"].value == "0"
    items: dict[tuple[str, int], ElementTree.Element] = {}
    for item in ElementTree.fromstring(xml).iter("Item"):
        items[item.get("name"), int(item.get("sample"))] = item
    for i, (name, wave) in enumerate(zip(rd.BAND_NAMES, rd.WAVELENGTHS)):
        assert items["DESCRIPTION", i].text == name
        assert items["DESCRIPTION", i].get("role") == "description"
        assert float(items["WAVELENGTH", i].text) == wave
        assert items["WAVELENGTH_UNITS", i].text == "Micrometers"
        assert float(items["CENTRAL_WAVELENGTH_UM", i].text) == wave
        assert items["CENTRAL_WAVELENGTH_UM", i].get("domain") == "IMAGERY"
    assert len(items) == 4 * 13


def test_two_writes_give_byte_identical_files(cache, tmp_path, monkeypatch):
    folder = _small(monkeypatch, tmp_path)
    assert rd.raster_demo_folder() == folder
    written = sorted(p.relative_to(folder) for p in folder.rglob("*.tif"))
    assert len(written) == rd.PRETRAIN_COUNT + rd.PER_CLASS * len(rd.CLASSES)
    full = cache / "demo_raster" / rd.VERSION
    for rel in written:
        assert (folder / rel).read_bytes() == (full / rel).read_bytes(), rel
    digital, _ = rd.scene("pretrain", 3)
    assert np.array_equal(tifffile.imread(folder / "pretrain" / "scene_0003.tif"), digital)
    assert not np.array_equal(rd.scene("pretrain", 4)[0], rd.scene("labelled", 4)[0])


def _covers(pixels: np.ndarray) -> np.ndarray:
    """Every valid pixel's nearest cover signature by spectral angle, read from the file alone;
    -1 where there is no data. [H, W]"""
    signatures = np.array([rd.SIGNATURES[c] for c in rd.COVERS])  # [covers, 13]
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    flat = pixels.reshape(13, -1).T.astype(np.float64)  # [N, 13]
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    covers = np.argmax(flat @ signatures.T, axis=1).reshape(pixels.shape[1:])
    return np.where((pixels != 0).all(0), covers, -1)


def test_the_labelled_classes_are_balanced_and_each_scene_is_what_its_folder_says(scenes):
    labelled = _labelled(scenes)
    names = [name for name, _ in labelled]
    assert {name: names.count(name) for name in rd.CLASSES} == dict.fromkeys(rd.CLASSES,
                                                                           rd.PER_CLASS)
    assert names == [rd.CLASSES[i % len(rd.CLASSES)] for i in range(len(names))]
    for index in range(2 * len(rd.CLASSES)):  # the files are the generator's scenes
        digital, covers = rd.scene("labelled", index)
        name, pixels = labelled[index]
        assert np.array_equal(digital, pixels)
        valid = covers >= 0
        assert 2 <= len(np.unique(covers[valid])) <= 3  # a palette of three covers
        # the covers can be read back from the spectra alone, pixel for pixel (nearly)
        assert (_covers(pixels)[valid] == covers[valid]).mean() > 0.95, index
    for name, pixels in labelled:  # every scene shows a pattern of at least two covers
        share = np.bincount(_covers(pixels)[(pixels != 0).all(0)], minlength=len(rd.COVERS))
        assert np.sort(share)[-2] >= 0.01 * share.sum(), name


def test_nodata_is_0_in_every_band_and_only_there(scenes):
    with_nodata = 0
    for rel, pixels in scenes.items():
        zero = pixels == 0  # [13, H, W]
        assert np.array_equal(zero.any(0), zero.all(0)), rel  # no valid pixel has a 0
        index = int(Path(rel).stem.split("_")[1])
        assert zero.any() == (index % 5 == 4), rel
        if zero.any():
            with_nodata += 1
            share = zero[0].mean()
            assert 0.0 < share < 0.25, rel  # a corner swath, not the scene
            assert zero[0][[0, 0, -1, -1], [0, -1, 0, -1]].any()  # touching a corner
    assert with_nodata == len(scenes) // 5


def _held_out_accuracy(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(nearest centroid, 10-nearest neighbours) top-1 on standardised ``features`` [N, F]:
    fitted on every class's even scenes, scored on the odd ones."""
    n = len(rd.CLASSES)
    z = (features - features.mean(0)) / np.maximum(features.std(0), 1e-12)
    fit = np.arange(len(labels)) // n % 2 == 0
    centroids = np.array([z[fit & (labels == k)].mean(0) for k in range(n)])
    nearest = np.argmin(((z[~fit, None] - centroids[None]) ** 2).sum(-1), axis=1)
    distance = ((z[~fit, None] - z[None, fit]) ** 2).sum(-1)  # [held, fitted]
    votes = labels[fit][np.argsort(distance, axis=1, kind="stable")[:, :10]]  # [held, 10]
    knn = np.array([np.bincount(v, minlength=n).argmax() for v in votes])
    return (nearest == labels[~fit]).mean(), (knn == labels[~fit]).mean()


def test_the_mean_spectrum_does_not_tell_the_classes_apart_but_the_layout_does(scenes):
    labelled = _labelled(scenes)
    labels = np.array([rd.CLASSES.index(name) for name, _ in labelled])
    valid = [(pixels != 0).all(0) for _, pixels in labelled]
    means = np.array([p[:, v].mean(1) for (_, p), v in zip(labelled, valid)])  # [N, 13]
    spreads = np.array([p[:, v].std(1) for (_, p), v in zip(labelled, valid)])  # [N, 13]
    chance = 1 / len(rd.CLASSES)
    # the per-band means, and means with standard deviations: near chance (v1's land-cover
    # classes: nearest centroid 1.0 on the means)
    for features in (means, np.concatenate([means, spreads], 1)):
        for accuracy in _held_out_accuracy(features, labels):
            assert accuracy < chance + 0.15, accuracy
    # the spatial arrangement does: how often two pixels at a lag and a direction differ in
    # cover (covers read from the spectra)
    layout = []
    for pixels in (p for _, p in labelled):
        covers, row = _covers(pixels), []
        for lag in (1, 3, 6, 12):
            for dy, dx in ((0, lag), (lag, 0), (lag, lag), (lag, -lag)):
                a = covers[:covers.shape[0] - dy, max(0, -dx):covers.shape[1] - max(0, dx)]
                b = covers[dy:, max(0, dx):covers.shape[1] - max(0, -dx)]
                both = (a >= 0) & (b >= 0)
                row.append((a != b)[both].mean())
        layout.append(row)
    assert min(_held_out_accuracy(np.array(layout), labels)) > chance + 0.25


def test_the_publish_is_atomic(tmp_path, monkeypatch):
    folder = _small(monkeypatch, tmp_path)
    leftover = folder.with_name(f".{rd.VERSION}.999.deadbeef")  # an interrupted writer's
    (leftover / "pretrain").mkdir(parents=True)
    (leftover / "pretrain" / "scene_0000.tif").write_bytes(b"truncated")
    assert rd.raster_demo_folder() == folder
    assert len(list((folder / "pretrain").glob("*.tif"))) == rd.PRETRAIN_COUNT
    tifffile.imread(folder / "pretrain" / "scene_0000.tif")  # the new one, not the leftover
    assert leftover.is_dir()  # another writer's temporary folder: never read, never removed
    temps = {p for p in folder.parent.iterdir() if p.name.startswith(".")}
    assert temps == {leftover}

    def fail(root):
        raise AssertionError("a published set is never written again")

    monkeypatch.setattr(rd, "_write_set", fail)
    assert rd.raster_demo_folder() == folder


def test_a_concurrent_writer_may_win(tmp_path, monkeypatch):
    folder = _small(monkeypatch, tmp_path)
    write = rd._write_set

    def racing(root):  # another process publishes while this one writes
        write(root)
        (folder / "winner").mkdir(parents=True)

    monkeypatch.setattr(rd, "_write_set", racing)
    assert rd.raster_demo_folder() == folder
    assert sorted(p.name for p in folder.iterdir()) == ["winner"]  # the winner's set is kept
    assert [p.name for p in folder.parent.iterdir()] == [rd.VERSION]  # ours removed
