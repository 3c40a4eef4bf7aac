"""`mim data pack`: which files become items (multi-part suffixes, files no modality reads, an
output inside its input), the marker and what overwrite=true may replace."""
from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mim.config import ConfigError
from mim.data.pack import pack
from mim.data.shards import MARKER


def pictures(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}.png")
    return folder


def members(out: Path) -> list[str]:
    return [name for tar in sorted(out.glob("*.tar")) for name in tarfile.open(tar).getnames()]


def test_nifti_volumes_are_packed_whole_and_read_back_as_the_folders_items(tmp_path):
    from mim.modalities.volume.config import VolumeDataConfig
    from mim.modalities.volume.dataset import build_dataset

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        volume = rng.normal(size=(10, 11, 12 + i)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), src / f"case{i}.nii.gz")
    np.save(src / "extra.v2.npy", rng.normal(size=(9, 9, 9)).astype(np.float32))
    pack(str(src), str(tmp_path / "out"), shard_size=3)
    assert members(tmp_path / "out") == [f"{n:08d}.nii.gz" for n in range(4)] + ["00000004.npy"]
    config = dict(input_size=[8, 8, 8])
    folder = build_dataset(VolumeDataConfig(root=str(src), **config))
    shards = build_dataset(VolumeDataConfig(root=str(tmp_path / "out"), format="wds", **config))
    assert len(folder) == len(shards) == 5
    for i in range(5):
        a, b = folder[(i, 4 + i)], shards[(i, 4 + i)]
        assert not b.skipped and a.x.equal(b.x), i


def test_files_no_modality_reads_are_skipped_said_and_counted(tmp_path, caplog):
    src = pictures(tmp_path / "src", 3)
    (src / "README.txt").write_text("about these pictures")
    (src / "labels.csv").write_text("00.png,a\n")
    with caplog.at_level(logging.WARNING, "mim.data"):
        manifest = json.loads(pack(str(src), str(tmp_path / "out")).read_text())
    assert manifest["items"] == 3 and manifest["skipped"] == 2
    assert members(tmp_path / "out") == ["00000000.png", "00000001.png", "00000002.png"]
    assert "2 files no modality reads skipped (README.txt, labels.csv)" in caplog.text
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("no picture")
    with pytest.raises(ConfigError, match=r"none of the 1 file of .* is one a modality reads"):
        pack(str(tmp_path / "text"), str(tmp_path / "out2"))


def test_an_output_inside_its_input_is_never_input_and_can_be_packed_again(tmp_path):
    src = pictures(tmp_path / "src", 5)
    first = json.loads(pack(str(src), str(src / "wds"), shard_size=2).read_text())
    again = json.loads(pack(str(src), str(src / "wds"), shard_size=2,
                            overwrite=True).read_text())
    assert first["items"] == again["items"] == 5 and again["skipped"] == 0
    assert sorted(p.name for p in (src / "wds").glob("*.tar")) == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list((src / "wds").glob(".*.tmp"))


def test_overwrite_refuses_a_folder_holding_files_no_pack_wrote_and_deletes_nothing(tmp_path):
    src = pictures(tmp_path / "src", 4)
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=1)
    (out / "notes.txt").write_text("mine")
    (out / "other.tar").write_bytes(b"")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ConfigError, match=r"output: .* holds 2 files no mim data pack wrote "
                                          r"\(notes.txt, other.tar\)"):
        pack(str(src), str(out), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite_replaces_exactly_what_the_previous_pack_wrote(tmp_path):
    src = pictures(tmp_path / "src", 5)
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=1)
    pack(str(src), str(out), shard_size=4, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", MARKER, "shard-000000.tar", "shard-000000.tar.idx.json",
        "shard-000001.tar", "shard-000001.tar.idx.json"]
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "mim data pack" and "shard-000001.tar" in marker["files"]


def test_a_stopped_pack_is_recognised_and_replaced_by_overwrite(tmp_path):
    src = pictures(tmp_path / "src", 5)
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=2)
    # the state a kill -9 in the middle of the third shard leaves: no manifest, a temporary
    (out / "manifest.json").unlink()
    (out / "shard-000002.tar").rename(out / ".shard-000002.tar.tmp")
    with pytest.raises(ConfigError, match="is not empty"):
        pack(str(src), str(out), shard_size=2)
    manifest = json.loads(pack(str(src), str(out), shard_size=5, overwrite=True).read_text())
    assert manifest["items"] == 5 and not list(out.glob(".*.tmp"))  # the stopped one's too
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar"]
