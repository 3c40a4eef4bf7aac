"""Guarantee: hostile shards never crash a run. A truncated tar, a shard that is no tar, a missing
or stale index and a member that does not decode are skipped (or the index rebuilt) with their
reason, and counted as broken files are."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mim.data import UnreadableSample
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset
from mim.data.pack import pack
from mim.data.shards import INDEX_SUFFIX

from .conftest import wait_for

pytestmark = pytest.mark.e2e


def shards(tmp_path: Path, count: int = 8, shard_size: int = 4) -> Path:
    rng = np.random.default_rng(1)
    (tmp_path / "src").mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "src" / f"{i:02d}.jpg")
    pack(str(tmp_path / "src"), str(tmp_path / "out"), shard_size=shard_size)
    return tmp_path / "out"


def dataset(out: Path):
    return build_dataset(ImageDataConfig(root=str(out), input_size=16, format="wds"))


def test_a_truncated_shard_keeps_its_whole_members_and_skips_the_cut_one(tmp_path, caplog):
    out = shards(tmp_path)
    last = out / "shard-000001.tar"
    index = json.loads(Path(f"{last}{INDEX_SUFFIX}").read_text())
    name, offset, size = index["members"][2]  # the third item's picture, cut in its middle
    last.write_bytes(last.read_bytes()[:offset + size // 2])
    with caplog.at_level(logging.WARNING, "mim.data"):
        data = dataset(out)
    assert len(data) == 7  # the headers after the cut are gone: item 7 with them
    assert "shard-000001.tar" in caplog.text and "unreadable part is skipped" in caplog.text
    with pytest.raises(UnreadableSample, match="shard truncated"):
        data.load(6, seed=0)
    sample = data[(6, 0)]  # replaced by the next readable item, and reported
    assert [path for path, _ in sample.skipped] == [data.describe(6)]
    assert "shard truncated" in sample.skipped[0][1]
    assert sample.skipped[0].kind == "truncated shard"


def test_a_shard_that_is_no_tar_is_skipped_with_its_reason(tmp_path, caplog):
    out = shards(tmp_path)
    (out / "shard-000000.tar").write_bytes(b"not a tar at all" * 100)
    Path(f"{out}/shard-000000.tar{INDEX_SUFFIX}").unlink()
    with caplog.at_level(logging.WARNING, "mim.data"):
        data = dataset(out)
    assert len(data) == 4 and all("shard-000001" in data.describe(i) for i in range(4))
    assert "shard-000000.tar" in caplog.text and "ReadError" in caplog.text


def test_a_missing_or_stale_index_is_rebuilt(tmp_path, caplog):
    out = shards(tmp_path)
    index = Path(f"{out}/shard-000000.tar{INDEX_SUFFIX}")
    reference = dataset(out)[(2, 7)].x
    index.unlink()
    assert dataset(out)[(2, 7)].x.equal(reference) and index.is_file()  # rebuilt, cached
    shutil.copy(Path(f"{out}/shard-000001.tar{INDEX_SUFFIX}"), index)  # another shard's
    (out / "shard-000000.tar").write_bytes((out / "shard-000000.tar").read_bytes() + bytes(512))
    with caplog.at_level(logging.INFO, "mim.data"):
        assert dataset(out)[(2, 7)].x.equal(reference)
    assert "made for another shard (of " in caplog.text and "; rebuilt" in caplog.text


def test_a_member_that_does_not_decode_is_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "src").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "src" / f"{i}.jpg")
    (tmp_path / "src" / "1.jpg").write_bytes(b"\xff\xd8 garbage, no picture")
    (tmp_path / "src" / "2.jpg").write_bytes(b"")
    pack(str(tmp_path / "src"), str(tmp_path / "out"))
    data = dataset(tmp_path / "out")
    sample = data[(1, 0)]
    assert [(path.rpartition(":")[2], s.kind) for s in sample.skipped for path in s[:1]] == [
        ("00000001.jpg", "not an image (cannot be decoded)"), ("00000002.jpg", "empty")]
    assert sample.x.shape == (3, 16, 16)


def test_a_volume_member_that_does_not_load_is_skipped_with_the_files_reason(tmp_path):
    from mim.modalities.volume.config import VolumeDataConfig
    from mim.modalities.volume.dataset import build_dataset as volumes

    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "0.npy", np.ones((8, 8, 8), np.float32))
    (tmp_path / "src" / "1.npy").write_bytes(b"\x93NUMPY but nothing after")
    np.save(tmp_path / "src" / "2.npy", np.full((8, 8, 8), np.nan, np.float32))
    np.save(tmp_path / "src" / "3.npy", np.ones((8, 8, 8), np.float32))
    pack(str(tmp_path / "src"), str(tmp_path / "out"))
    data = volumes(VolumeDataConfig(root=str(tmp_path / "out"), format="wds",
                                    input_size=[8, 8, 8]))
    sample = data[(1, 0)]
    assert [s[0].rpartition(":")[2] for s in sample.skipped] == ["00000001.npy", "00000002.npy"]
    assert "bad .npy header" in sample.skipped[0][1]
    assert sample.skipped[1].kind == "NaN or Inf voxels"
    assert sample.x.shape[-3:] == (8, 8, 8)


def test_a_members_reason_names_the_member_not_its_temporary_copy(tmp_path):
    import gzip

    from mim.modalities.volume.config import VolumeDataConfig
    from mim.modalities.volume.dataset import build_dataset as volumes

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "0.nii.gz").write_bytes(gzip.compress(b"no NIfTI header" * 20))
    np.save(tmp_path / "src" / "1.npy", np.ones((8, 8, 8), np.float32))
    pack(str(tmp_path / "src"), str(tmp_path / "out"))
    data = volumes(VolumeDataConfig(root=str(tmp_path / "out"), format="wds",
                                    input_size=[8, 8, 8]))
    (path, reason), = data[(0, 0)].skipped
    assert path.endswith("shard-000000.tar:00000000.nii.gz") and "damaged NIfTI" in reason
    assert path in reason and not re.search(r"/tmp\w{8}\.nii\.gz", reason)  # not the copy


def test_a_pack_killed_midway_is_refused_until_packed_again(cli, tmp_path, run_proc):
    """A real ``mim data pack`` killed (SIGKILL) after its second shard: the folder is named an
    interrupted pack, a run on it stops before any compute, and the pack run again finishes."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (1200, 1200), (40, 80, 90)).save(src / "000.png")
    for n in range(1, 100):  # large pictures resized down: slow enough to be killed midway
        shutil.copy(src / "000.png", src / f"{n:03d}.png")
    proc = run_proc(cli, ["data", "pack", f"input={src}", f"output={out}", "shard_size=4",
                          "max_side=32"])
    wait_for(proc, lambda: (out / "shard-000001.tar").exists(), "the second shard")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the pack ended before the kill"
    assert not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match=rf"data.root: {out} holds an interrupted mim "
                                                r"data pack \(\d+ shards, [^;]*mim-pack.json"
                                                r"[^;]*; no manifest.json"):
        dataset(out)
    refused = cli.train(tmp_path / "run", "data.format=wds", f"data.root={out}", check=False)
    assert refused.returncode == 2, cli.describe(refused)
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mim: config error: data.root: {out} holds an interrupted") and \
        "run the same mim data pack again with overwrite=true" in last, last
    pack(str(src), str(out), shard_size=50, overwrite=True)
    assert len(dataset(out)) == 100
