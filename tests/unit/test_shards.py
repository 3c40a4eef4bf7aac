"""data.format=wds: shards packed from a folder give the folder's items, samples and labels at
the same indices, from a folder, a list, a brace pattern or an fsspec URL; `mim data pack`."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from mim.config import ConfigError
from mim.data import StreamSampler
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import build_dataset
from mim.data.pack import pack
from mim.data.shards import expand_braces, shard_urls


def make_folder(root: Path, count: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):  # two classes, sizes that differ, so crops differ per item
        folder = root / ("cat", "dog")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (40 + 3 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("shards")
    src = make_folder(base / "src")
    pack(str(src), str(base / "out"), shard_size=4, labels="folders")
    return src, base / "out"


def items(cfg: ImageDataConfig, seeds=(3, 11)) -> list[tuple[str, torch.Tensor, int]]:
    data = build_dataset(cfg)
    return [(data.describe(i), data[(i, s)].x, data[(i, s)].label)
            for i in range(len(data)) for s in seeds]


def assert_same_samples(a, b) -> None:
    assert len(a) == len(b)
    for (_, xa, _), (_, xb, _) in zip(a, b):
        assert torch.equal(xa, xb)


def test_braces_expand_as_webdataset_does():
    assert expand_braces("t-{008..010}.tar") == ["t-008.tar", "t-009.tar", "t-010.tar"]
    assert expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_pack_writes_shards_indices_and_a_manifest(packed):
    src, out = packed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["items"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["items"] == 10 and manifest["classes"] == ["cat", "dog"]
    assert manifest["bytes"] == sum(p.stat().st_size for p in out.glob("*.tar"))
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names[:4] == ["00000000.jpg", "00000000.cls", "00000001.jpg", "00000001.cls"]
        assert tar.extractfile("00000001.cls").read() == b"0"  # cat (folder order: cats first)
    with tarfile.open(out / "shard-000001.tar") as tar:
        assert tar.extractfile("00000005.cls").read() == b"1"  # dog: the labels travel
    assert (out / "shard-000002.tar.idx.json").is_file()


def test_shards_give_the_folders_samples_at_the_same_indices(packed):
    src, out = packed
    folder = items(ImageDataConfig(root=str(src), input_size=16, labels="folders"))
    shards = items(ImageDataConfig(root=str(out), input_size=16, format="wds",
                                   labels="shards"))
    assert_same_samples(folder, shards)
    assert [label for *_, label in folder] == [label for *_, label in shards]
    assert shards[0][0].endswith("shard-000000.tar:00000000.jpg")


def test_a_list_a_brace_pattern_and_an_fsspec_url_name_the_same_shards(packed, tmp_path):
    _, out = packed
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in sorted(out.glob("*.tar"))))
    memory = fsspec.filesystem("memory")
    for tar in sorted(out.glob("*.tar")):
        memory.pipe(f"/wds-test/{tar.name}", tar.read_bytes())
    roots = [str(tmp_path / "list.txt"), f"{out}/shard-{{000000..000002}}.tar",
             "memory://wds-test", f"file://{out}"]
    reference = items(ImageDataConfig(root=str(out), input_size=16, format="wds"), seeds=(5,))
    for root in roots:
        assert len(shard_urls(root)) == 3, root
        assert_same_samples(reference, items(ImageDataConfig(root=root, input_size=16,
                                                             format="wds"), seeds=(5,)))


def test_ranks_read_disjoint_items_that_together_are_the_global_batch(packed):
    _, out = packed
    data = build_dataset(ImageDataConfig(root=str(out), input_size=16, format="wds"))
    taken = []
    for rank in range(2):
        order = iter(StreamSampler(len(data), seed=0, local_batch=2, rank=rank, world_size=2))
        taken.append([data.describe(next(order)[0]) for _ in range(4)])  # two micro-steps
    assert not set(taken[0]) & set(taken[1])
    single = iter(StreamSampler(len(data), seed=0, local_batch=4))
    first = [data.describe(next(single)[0]) for _ in range(4)]
    assert sorted(first) == sorted(taken[0][:2] + taken[1][:2])


def test_pack_refuses_a_used_output_and_overwrite_replaces_its_shards(packed, tmp_path):
    src, _ = packed
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=2)
    with pytest.raises(ConfigError, match="output: .* is not empty"):
        pack(str(src), str(out))
    pack(str(src), str(out), shard_size=8, overwrite=True)
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    with pytest.raises(ConfigError, match="input: .* neither a folder nor a list file"):
        pack(str(tmp_path / "missing"), str(tmp_path / "o2"))


def test_max_side_resizes_pictures_down(packed, tmp_path):
    src, _ = packed
    pack(str(src), str(tmp_path / "small"), max_side=20)
    with tarfile.open(tmp_path / "small" / "shard-000000.tar") as tar:
        sides = [Image.open(tar.extractfile(m)).size for m in tar.getmembers()]
    assert sides and max(max(s) for s in sides) == 20


def test_videos_and_volumes_in_shards_give_the_folders_samples(tmp_path):
    from mim.modalities.video.config import VideoDataConfig
    from mim.modalities.video.dataset import build_dataset as videos
    from mim.modalities.volume.config import VolumeDataConfig
    from mim.modalities.volume.dataset import build_dataset as volumes

    from tests.unit.test_video_data import encode

    (tmp_path / "v").mkdir()
    (tmp_path / "n").mkdir()
    for i in range(3):
        encode(tmp_path / "v" / f"{i}.mp4", 20 + 4 * i)
        np.save(tmp_path / "n" / f"{i}.npy", np.random.default_rng(i).normal(
            size=(10 + i, 12, 12)).astype(np.float32))
    for kind in "vn":
        pack(str(tmp_path / kind), str(tmp_path / f"{kind}-wds"), shard_size=2)
    cases = [(videos, lambda **kw: VideoDataConfig(num_frames=4, sampling_rate=2, input_size=16,
                                                   **kw), "v"),
             (volumes, lambda **kw: VolumeDataConfig(input_size=[8, 8, 8], **kw), "n")]
    for build, config, kind in cases:
        folder = build(config(root=str(tmp_path / kind)))
        shards = build(config(root=str(tmp_path / f"{kind}-wds"), format="wds"))
        assert len(folder) == len(shards) == 3
        assert folder.identity() == {"items": 3}
        assert shards.identity()["items"] == 3 and shards.identity()["manifest"]
        assert [name for name, _ in shards.identity()["shards"]] == [
            "shard-000000.tar", "shard-000001.tar"]
        for i in range(3):
            a, b = folder[(i, 9 + i)], shards[(i, 9 + i)]
            assert not b.skipped and torch.equal(a.x, b.x), (kind, i)


def test_a_remote_shards_index_beside_it_is_read_not_rebuilt(packed, tmp_path, monkeypatch):
    _, out = packed
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    memory = fsspec.filesystem("memory")
    for path in sorted(out.glob("shard-*")):  # the shards and the indices pack wrote
        memory.pipe(f"/with-index/{path.name}", path.read_bytes())
        if path.suffix == ".tar":
            memory.pipe(f"/bare/{path.name}", path.read_bytes())
    reference = items(ImageDataConfig(root=str(out), input_size=16, format="wds"), seeds=(1,))
    assert_same_samples(reference, items(ImageDataConfig(root="memory://with-index",
                                                         input_size=16, format="wds"), (1,)))
    assert not (tmp_path / "cache").exists()  # nothing rebuilt
    assert_same_samples(reference, items(ImageDataConfig(root="memory://bare", input_size=16,
                                                         format="wds"), seeds=(1,)))
    assert len(list((tmp_path / "cache" / "shard_index").iterdir())) == 3  # built, cached


def foreign_shards(folder: Path, labels: list[str], shard_size: int = 3) -> Path:
    """Shards another tool wrote into a user's folder: no manifest, no index, no marker."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for first in range(0, len(labels), shard_size):
        with tarfile.open(folder / f"data-{first:04d}.tar", "w") as tar:
            for n in range(first, min(first + shard_size, len(labels))):
                jpeg = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                    jpeg, format="JPEG")
                for ext, data in (("jpg", jpeg.getvalue()), ("cls", labels[n].encode())):
                    info = tarfile.TarInfo(f"{n:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def test_indexes_of_a_users_shards_go_to_the_cache_not_beside_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    root = foreign_shards(tmp_path / "user", ["a"] * 5)
    before = sorted(p.name for p in root.iterdir())
    assert len(build_dataset(ImageDataConfig(root=str(root), input_size=16, format="wds"))) == 5
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written there
    assert len(list((tmp_path / "cache" / "shard_index").iterdir())) == 2


def test_unused_labels_are_not_read_and_class_names_map_to_sorted_ids(tmp_path):
    root = foreign_shards(tmp_path / "named", ["dog", "cat", "dog", "bird"])
    plain = build_dataset(ImageDataConfig(root=str(root), input_size=16, format="wds"))
    sample = plain[(1, 0)]
    assert not sample.skipped and sample.label == -1  # names in .cls: not a bad label
    labelled = build_dataset(ImageDataConfig(root=str(root), input_size=16, format="wds",
                                             labels="shards"))
    assert labelled.classes == ["bird", "cat", "dog"]
    assert [labelled[(i, 0)].label for i in range(4)] == [2, 1, 2, 0]
    with pytest.raises(ValueError, match="data.labels: 'folders' names labels of files"):
        ImageDataConfig(root=str(root), format="wds", labels="folders")
    with pytest.raises(ValueError, match="data.labels: 'shards' .* needs data.format=wds"):
        ImageDataConfig(root=str(root), labels="shards")


def test_a_packs_labels_keep_their_ids_and_the_manifests_classes(packed):
    _, out = packed
    data = build_dataset(ImageDataConfig(root=str(out), input_size=16, format="wds",
                                         labels="shards"))
    assert data.classes == ["cat", "dog"]  # folder order: the cats, then the dogs
    assert [data[(i, 0)].label for i in range(10)] == [0] * 5 + [1] * 5


def test_the_data_identity_names_the_shards_their_sizes_and_the_manifest(packed, tmp_path):
    _, out = packed
    identity = build_dataset(ImageDataConfig(root=str(out), input_size=16,
                                             format="wds")).identity()
    assert json.loads(json.dumps(identity)) == identity  # JSON values only
    assert identity == {
        "items": 10, "manifest": hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest(),
        "shards": [[p.name, p.stat().st_size] for p in sorted(out.glob("*.tar"))]}
    grown = tmp_path / "grown"
    shutil.copytree(out, grown)
    shutil.copy(grown / "shard-000001.tar", grown / "shard-000003.tar")
    other = build_dataset(ImageDataConfig(root=str(grown), input_size=16, format="wds"))
    assert other.identity()["shards"][-1][0] == "shard-000003.tar"
    assert other.identity() != identity


def test_shards_that_differ_from_their_manifest_are_warned_about(packed, tmp_path, caplog):
    _, out = packed
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    (changed / "shard-000002.tar").unlink()
    shutil.copy(changed / "shard-000000.tar", changed / "extra.tar")
    with caplog.at_level(logging.WARNING, "mim.data"):
        build_dataset(ImageDataConfig(root=str(changed), input_size=16, format="wds"))
    lines = [r.getMessage() for r in caplog.records if "differ from" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "1 shard it lists missing (shard-000002.tar)" in lines[0]
    assert "1 not in it (extra.tar)" in lines[0]


def test_an_interrupted_pack_is_refused_naming_the_folder_and_the_remedy(packed, tmp_path):
    _, out = packed
    stopped = tmp_path / "stopped"
    shutil.copytree(out, stopped)
    (stopped / "manifest.json").unlink()  # what a pack killed before its end leaves
    with pytest.raises(FileNotFoundError, match=r"data.root: .*stopped holds an interrupted "
                                                r"mim data pack \(3 shards, mim-pack.json; no "
                                                r"manifest.json\).*run the same mim data pack"):
        build_dataset(ImageDataConfig(root=str(stopped), input_size=16, format="wds"))
    (stopped / "mim-pack.json").unlink()  # a pack of an older mim: its temporary file
    (stopped / ".shard-000003.tar.tmp").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"\.shard-000003\.tar\.tmp; no manifest"):
        build_dataset(ImageDataConfig(root=str(stopped), input_size=16, format="wds"))


def test_a_modalitys_items_fewer_than_the_manifest_counts_are_warned_about(tmp_path, caplog):
    src = make_folder(tmp_path / "src", 3)
    import nibabel  # a volume: packed (the volume modality reads it), not an image
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
                 src / "volume.nii.gz")
    pack(str(src), str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING, "mim.data"):
        data = build_dataset(ImageDataConfig(root=str(tmp_path / "out"), input_size=16,
                                             format="wds"))
    assert len(data) == 3
    assert "3 of the 4 items" in caplog.text and "are read as image" in caplog.text


def test_a_stale_index_of_the_same_size_is_found_and_rebuilt(tmp_path, caplog):
    src = make_folder(tmp_path / "src", 6)
    out = tmp_path / "out"
    pack(str(src), str(out), shard_size=6)
    shard = out / "shard-000000.tar"
    with tarfile.open(shard) as tar:  # the same members, the pictures in reverse order
        found = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    size = shard.stat().st_size
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in reversed(found):
            tar.addfile(member, io.BytesIO(data))
    assert shard.stat().st_size == size
    with caplog.at_level(logging.INFO, "mim.data"):
        data = build_dataset(ImageDataConfig(root=str(out), input_size=16, format="wds"))
        samples = [data[(i, 1)] for i in range(6)]
    assert "is stale" in caplog.text and "rebuilt" in caplog.text
    assert not any(s.skipped for s in samples)
    assert data.describe(0).endswith(":00000005.jpg")  # the tar's order, as it is now


def test_a_missing_shard_of_a_brace_pattern_is_named(packed):
    _, out = packed
    with pytest.raises(FileNotFoundError, match=r"shard-000003.tar does not exist \(one of the "
                                                r"4 shards .* names\)"):
        shard_urls(f"{out}/shard-{{000000..000003}}.tar")


def test_one_shard_is_one_shard_and_a_member_is_named_not_a_buffer(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "0.png").write_bytes(b"not a picture, but named like one")
    pack(str(tmp_path / "src"), str(tmp_path / "out"))
    data = build_dataset(ImageDataConfig(root=str(tmp_path / "out"), input_size=16,
                                         format="wds"))
    with pytest.raises(Exception) as caught:
        data.load(0, 0)
    assert "BytesIO" not in str(caught.value) and "00000000.png" in str(caught.value)
    (tmp_path / "text").mkdir()
    with tarfile.open(tmp_path / "text" / "only.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("x.txt"))
    with pytest.raises(FileNotFoundError, match="no image members in the 1 shard of"):
        build_dataset(ImageDataConfig(root=str(tmp_path / "text"), input_size=16, format="wds"))
