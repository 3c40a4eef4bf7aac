"""Where ``mim convert`` may write: never into a run directory, onto something that exists only
with ``overwrite=true``, and then only onto an export mim wrote (what a ``mim-export.json``
lists, at its size); published through a temporary sibling and a rename.

Exports are made here from a tiny model (``test_convert``'s sizes) into real folders; every
refusal is checked file by file: names and bytes unchanged, nothing left beside them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mim.config.errors import ConfigError
from mim.convert import WRITERS, Converted, convert
from mim.rundir import (EXPORT_MARKER, check_export_target, claim_run_dir, mim_wrote, publish,
                        staging_path)
from tests.unit.test_convert import SIZE, _config, tiny_mim


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mim export of a tiny model to convert from."""
    folder = tmp_path_factory.mktemp("source") / "mim"
    WRITERS["mim"](Converted(_config(), 3, tiny_mim().state_dict(), "mim", (SIZE, SIZE)), folder)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def marker(folder: Path) -> dict:
    return json.loads((folder / EXPORT_MARKER).read_text())


def test_overwrite_refuses_a_folder_mim_did_not_write(source, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        (photos / name).write_bytes(name.encode())
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as info:
        convert(source, photos, to="hf", overwrite=True)
    assert str(info.value) == (
        f"output: {photos} holds a.jpg, b.jpg, c.jpg, d.jpg and 1 more, which no "
        f"{EXPORT_MARKER} of mim's lists (mim did not write it, or it changed since); "
        "overwrite=true replaces only an export mim wrote: choose an empty or new output")
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "photos"]
    forged = tmp_path / "forged"  # a marker mim did not write is not mim's, nor what it lists
    forged.mkdir()
    (forged / "a.jpg").write_bytes(b"a.jpg")
    (forged / EXPORT_MARKER).write_text(json.dumps({"files": {"a.jpg": 5}}))
    with pytest.raises(ConfigError, match=f"holds a.jpg, {EXPORT_MARKER}, which"):
        check_export_target(forged, overwrite=True)


def test_overwrite_replaces_an_export_mim_wrote_and_nothing_added_to_it(source, tmp_path) -> None:
    out = convert(source, tmp_path / "out", to="hf")
    listed = marker(out)
    assert listed["written_by"] == "mim" and listed["format"] == "hf"
    assert listed["files"] == {p.name: p.stat().st_size for p in out.iterdir()
                               if p.name != EXPORT_MARKER}
    assert "preprocessor_config.json" in listed["files"]
    convert(source, out, to="timm", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     EXPORT_MARKER, "model.safetensors"]
    assert marker(out)["format"] == "timm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match=r"holds notes.txt, which no mim-export.json"):
        convert(source, out, to="timm", overwrite=True)
    (out / "notes.txt").unlink()
    with open(out / "README.md", "a") as card:
        card.write("My notes on these weights.\n")  # mim's card, changed since
    with pytest.raises(ConfigError, match=r"holds README.md, which"):
        convert(source, out, to="timm", overwrite=True)
    assert (out / "README.md").read_text().endswith("My notes on these weights.\n")


def test_a_file_export_is_listed_beside_it_and_a_card_changed_there_is_kept(
        source, tmp_path, caplog) -> None:
    folder = tmp_path / "weights"
    path = convert(source, folder / "mae.pth", to="mae")
    assert marker(folder)["files"] == {"README.md": (folder / "README.md").stat().st_size,
                                       "mae.pth": path.stat().st_size}
    (folder / "photo.jpg").write_bytes(b"jpeg")
    convert(source, path, to="mae", overwrite=True)  # the folder's other files are not touched
    assert (folder / "photo.jpg").read_bytes() == b"jpeg" and mim_wrote(path)
    with pytest.raises(ConfigError, match=r"photo.jpg is a file no mim-export.json of mim's "
                                          r"beside it lists"):
        convert(source, folder / "photo.jpg", to="mae", overwrite=True)
    with open(folder / "README.md", "a") as card:
        card.write("My notes.\n")
    with caplog.at_level(logging.WARNING, logger="mim"):
        convert(source, path, to="mae", overwrite=True)
    assert (folder / "README.md").read_text().endswith("My notes.\n")  # kept, and said
    assert f"{folder / 'README.md'} exists and mim did not write it" in caplog.text
    with open(path, "ab") as f:
        f.write(b"\0")  # the checkpoint changed since mim wrote it: no longer mim's alone
    with pytest.raises(ConfigError, match=r"mae.pth is a file no mim-export.json"):
        convert(source, path, to="mae", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", EXPORT_MARKER,
                                                               "mae.pth", "photo.jpg"])
    shared = tmp_path / "shared"  # a file of the marker's name that mim did not write: kept
    shared.mkdir()
    (shared / EXPORT_MARKER).write_text("{}\n")
    convert(source, shared / "mae.pth", to="mae")
    assert (shared / EXPORT_MARKER).read_text() == "{}\n"
    with pytest.raises(ConfigError, match="mae.pth is a file no mim-export.json"):
        convert(source, shared / "mae.pth", to="mae", overwrite=True)  # so: never replaced


def test_converting_mims_own_export_again_recognises_its_files(source, tmp_path,
                                                               caplog) -> None:
    first = convert(source, tmp_path / "first", to="mim")
    with caplog.at_level(logging.WARNING, logger="mim"):
        again = convert(first, tmp_path / "again", to="mim")
        convert(again, again, to="mim", overwrite=True)  # an export replaced by its own copy
        convert(again, again / "encoder.pth", to="mae")  # a file beside its card
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [], warned  # (the INFO lines an earlier test may have let through: not)
    assert (again / "README.md").read_text().startswith("---\nlibrary_name: timm\n")
    check_export_target(again, overwrite=True)  # still all mim's


def test_export_targets(tmp_path) -> None:
    claim_run_dir(tmp_path / "run")
    for inside in (tmp_path / "run", tmp_path / "run" / "hf", tmp_path / "run" / "a" / "b"):
        with pytest.raises(ConfigError, match="inside the mim run"):
            check_export_target(inside, overwrite=True)
    check_export_target(tmp_path / "new", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_export_target(tmp_path / "empty", overwrite=False)
    (tmp_path / "file.pth").write_text("x")
    with pytest.raises(ConfigError, match="an existing file.*overwrite=true"):
        check_export_target(tmp_path / "file.pth", overwrite=False)
    with pytest.raises(ConfigError, match="is a file no mim-export.json"):
        check_export_target(tmp_path / "file.pth", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(ConfigError, match="link is a file no mim-export.json"):
        check_export_target(tmp_path / "link", overwrite=True)  # mim writes no links
    with pytest.raises(ConfigError, match="the name of mim's export marker"):
        check_export_target(tmp_path / EXPORT_MARKER, overwrite=True)


def test_publish_replaces_a_folder_and_a_file_whole(tmp_path) -> None:
    out = tmp_path / "out"
    staged = staging_path(out)
    assert staged.parent == tmp_path and staged.name.startswith(".")
    (staged / "out").mkdir(parents=True)
    (staged / "out" / "old.txt").write_text("old")
    publish(staged, out, "mim", overwrite=False)
    staged.rmdir()  # publish moved the export out
    (staged / "out").mkdir(parents=True)
    (staged / "out" / "new.txt").write_text("new")
    publish(staged, out, "mim", overwrite=True)
    staged.rmdir()
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_MARKER, "new.txt"]
    target = tmp_path / "ckpt.pth"
    for text in ("old", "newer"):
        staged.mkdir()
        (staged / "ckpt.pth").write_text(text)
        publish(staged, target, "mae", overwrite=True)
        staged.rmdir()
    assert target.read_text() == "newer" and mim_wrote(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", EXPORT_MARKER, "out"]
