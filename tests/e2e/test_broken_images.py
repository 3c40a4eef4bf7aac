"""A real-world image folder: mixed formats, sizes and modes, nested folders, broken files.

Readable-but-odd files (RGBA, palette, 1x1) must train; unreadable ones (truncated, empty, not
an image) and a 16-bit picture among the photos (data, never squeezed into 8 bits) must be
skipped with their path and a reason, never crash.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

pytestmark = pytest.mark.e2e


def _noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _gradient(width: int, height: int, phase: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // max(width - 1, 1) + phase) % 256,
                    (y * 255 // max(height - 1, 1)) % 256,
                    ((x + y + phase) * 3) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def make_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """Writes the folder; returns (files that must be read, files that must be skipped)."""
    rng = np.random.default_rng(0)
    good: list[Path] = []
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP")]
    if features.check("webp"):
        formats.append(("webp", "WEBP"))
    sizes = [(64, 48), (40, 90), (33, 33), (120, 70), (50, 50), (37, 61)]
    for i in range(12):
        ext, fmt = formats[i % len(formats)]
        folder = root / ("cats" if i % 3 == 0 else "dogs/puppies" if i % 3 == 1 else ".")
        folder.mkdir(parents=True, exist_ok=True)
        width, height = sizes[i % len(sizes)]
        image = _noise(rng, width, height) if i % 2 else _gradient(width, height, 17 * i)
        path = folder / f"good_{i:02d}.{ext}"
        image.save(path, fmt)
        good.append(path.resolve())

    odd = root / "odd"
    odd.mkdir()
    rgba = np.concatenate([rng.integers(0, 256, (40, 40, 3)), np.full((40, 40, 1), 128)], -1)
    Image.fromarray(rgba.astype(np.uint8)).save(odd / "rgba.png")
    _noise(rng, 48, 36).convert("P", palette=Image.ADAPTIVE, colors=16).save(odd / "palette.png")
    deep = (np.linspace(0, 65535, 44 * 52).reshape(44, 52)).astype(np.uint16)
    Image.fromarray(deep).save(odd / "gray16.png")  # mode I;16
    Image.new("RGB", (1, 1), (200, 30, 60)).save(odd / "one_pixel.png")
    good += [(odd / n).resolve() for n in ("rgba.png", "palette.png", "one_pixel.png")]
    assert Image.open(odd / "gray16.png").mode.startswith("I;16")
    assert Image.open(odd / "palette.png").mode == "P"

    broken_dir = root / "dogs" / "broken"
    broken_dir.mkdir(parents=True)
    buffer = io.BytesIO()
    _noise(rng, 64, 64).save(buffer, "JPEG")
    (broken_dir / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    (broken_dir / "empty.png").write_bytes(b"")
    (broken_dir / "notes.jpg").write_text("this is not a picture\n")
    broken = [(broken_dir / n).resolve() for n in ("truncated.jpg", "empty.png", "notes.jpg")]
    broken.append((odd / "gray16.png").resolve())  # 16-bit data among photos: never rescaled
    return good, broken


def test_training_skips_broken_files_and_reports_them(cli, tmp_path: Path) -> None:
    data, run = tmp_path / "pictures", tmp_path / "run"
    good, broken = make_folder(data)

    # 19 files, batches of 8: 16 per epoch, 48 samples = 3 epochs, so every file is drawn
    result = cli.train(run, f"data.root={data}", "train.max_steps=6")

    log = (run / "train.log").read_text()
    derived = (run / "derived.json").read_text()
    assert f'"dataset_items": {len(good) + len(broken)}' in derived, derived
    reports = {line for line in log.splitlines() if "skipped unreadable item" in line}
    for path in broken:
        line = next((r for r in reports if f"{path}:" in r), None)
        assert line is not None, f"{path.name} not reported:\n{log}"
        reason = line.split(f"{path}:", 1)[1].strip()
        assert reason, line
        assert f"{path}:" in result.stderr  # also shown on the terminal
    assert "empty file (0 bytes)" in log
    assert "data.reader=raster" in log  # what to set to read the 16-bit file's values
    for path in good:  # odd modes and tiny images are converted, not skipped
        assert str(path) not in "\n".join(reports), f"{path.name} was skipped:\n{log}"

    records = cli.metrics(run)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[-1]["skipped"] > 0, records[-1]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert (run / "checkpoints" / "last" / "state.pt").is_file()
