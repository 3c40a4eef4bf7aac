"""File listing under data.root: links followed, each real folder and file read once; a file's
suffix; labels as class ids."""
from __future__ import annotations

import logging

from mim.data.files import file_labels, file_suffix, find_files


def test_a_symlink_loop_is_read_once_and_reported(tmp_path, caplog):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        (root / f"{i}.txt").write_text("x")
        (root / "a" / f"{i}.txt").write_text("x")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a -> .. -> a -> ...
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # a second link to a
    with caplog.at_level(logging.WARNING, logger="mim.data"):
        files = find_files(root, lambda n: n.endswith(".txt"), "text files")
    assert [str(f.relative_to(root)) for f in files] == \
        ["0.txt", "1.txt", "2.txt", "a/0.txt", "a/1.txt", "a/2.txt"]
    assert "2 links to a folder already read" in caplog.text


def test_a_folder_linked_once_is_read(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert [f.name for f in find_files(tmp_path / "data", lambda n: True, "files")] == ["x.txt"]


def test_a_link_to_a_file_already_listed_is_skipped_and_reported(tmp_path, caplog):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("x")
    (root / "b.txt").symlink_to(root / "a.txt")  # the same file again
    (root / "c.txt").symlink_to(tmp_path / "elsewhere.txt")  # a link to a file listed once
    (tmp_path / "elsewhere.txt").write_text("y")
    with caplog.at_level(logging.WARNING, logger="mim.data"):
        files = find_files(root, lambda n: n.endswith(".txt"), "text files")
    assert [f.name for f in files] == ["a.txt", "c.txt"]
    assert "1 link to a file already listed" in caplog.text


def test_a_compression_suffix_keeps_the_suffix_before_it_an_ordinary_dot_does_not():
    assert file_suffix("scan.nii.gz") == ".nii.gz" and file_suffix("a.TAR.GZ") == ".tar.gz"
    assert file_suffix("photo.v2.jpg") == ".jpg" and file_suffix("x.npy") == ".npy"
    assert file_suffix("README") == "" and file_suffix("notes.gz") == ".gz"


def test_folder_and_csv_labels_are_ids_of_the_sorted_class_names(tmp_path):
    files = [tmp_path / d / "x.png" for d in ("dog", "cat", "dog")]
    assert file_labels(files, tmp_path, "folders") == ([1, 0, 1], ["cat", "dog"])
    (tmp_path / "l.csv").write_text("dog/x.png,b\ncat/x.png,a\nother.png,c\n")
    assert file_labels(files, tmp_path, str(tmp_path / "l.csv")) == ([1, 0, 1], ["a", "b", "c"])
