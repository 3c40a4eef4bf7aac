"""The list-file grammar video and audio share: windows, labels by name or number, a held-out
list's names mapped onto the training classes, and one-line errors naming the line."""
from __future__ import annotations

from pathlib import Path

import pytest

from mim.data.listfile import read_list


def test_held_out_names_map_onto_the_training_classes(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.wav dog\nb.wav cat 1 2.5\n'c d.wav' dog\n")
    (tmp_path / "val.txt").write_text("e.wav dog\nf.wav bird\ng.wav\n")
    items, classes = read_list(tmp_path / "train.txt")
    assert classes == ["cat", "dog"] and [i.label for i in items] == [1, 0, 1]
    assert (items[1].start, items[1].end) == (1.0, 2.5) and items[2].path == tmp_path / "c d.wav"
    held, names = read_list(tmp_path / "val.txt", classes=classes)
    assert names == classes and [i.label for i in held] == [1, -1, -1]  # bird: not trained on
    numbered, none = read_list(tmp_path / "val.txt")
    assert none == ["bird", "dog"] and [i.label for i in numbered] == [1, 0, -1]


def test_numbers_and_errors(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("a.wav 3\nb.wav 0  # a comment\n")
    items, classes = read_list(tmp_path / "n.txt", classes=["x"])
    assert classes == [] and [i.label for i in items] == [3, 0]
    (tmp_path / "bad.txt").write_text("a.wav 5 2\n")
    with pytest.raises(ValueError, match=r"bad.txt line 1: need 0 <= start_sec < end_sec"):
        read_list(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(FileNotFoundError, match="lists no sound files"):
        read_list(tmp_path / "empty.txt", what="sound files")
