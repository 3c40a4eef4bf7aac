"""Builders of the hostile media corpus (images, videos, volumes): each file a different way of
being broken or odd. ``*_corpus(root)`` -> (files that must be read, files that must be skipped).

The video builders reuse ``tests/unit/test_video_data.py`` (loaded by path: any import mode).
"""
from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

_spec = importlib.util.spec_from_file_location(
    "mim_video_data_tests", Path(__file__).resolve().parents[1] / "unit" / "test_video_data.py")
video_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(video_tests)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def image_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    good, bad = [], []

    def photo(w: int = 48, h: int = 40) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    for i in range(8):  # plain good files
        path = root / f"good_{i}.{('jpg', 'png')[i % 2]}"
        photo().save(path)
        good.append(path)
    odd = {  # readable but odd: converted, never skipped
        "rgba.png": lambda p: Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)).save(p),
        "palette.png": lambda p: photo().convert("P", palette=Image.ADAPTIVE, colors=8).save(p),
        "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (9, 99, 199)).save(p),
        "one_bit.png": lambda p: photo().convert("1").save(p),
        "la.png": lambda p: photo().convert("LA").save(p),
        "cmyk.jpg": lambda p: photo().convert("CMYK").save(p, "JPEG"),
        "png_named.jpg": lambda p: photo().save(p, "PNG"),  # wrong extension, right content
        "tall.png": lambda p: photo(3, 500).save(p),
    }
    for name, write in odd.items():
        write(root / name)
        good.append(root / name)
    deep = {  # data among photos: skipped and named (data.reader=raster), never rescaled
        "gray16.png": lambda p: Image.fromarray(np.linspace(0, 65535, 40 * 44).reshape(40, 44)
                                                 .astype(np.uint16)).save(p),
        "float32.tif": lambda p: Image.fromarray(rng.random((20, 20), dtype=np.float32)).save(p),
    }
    for name, write in deep.items():
        write(root / name)
        bad.append(root / name)
    buffer = io.BytesIO()
    photo(64, 64).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    buffer = io.BytesIO()
    photo(64, 64).save(buffer, "PNG")
    png = buffer.getvalue()
    broken = {
        "zero.jpg": b"", "zero.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3], "truncated.png": png[: len(png) // 2],
        "header_only.jpg": jpeg[:200], "text.jpg": b"not a picture\n" * 10,
        "html.png": b"<html><body>404 Not Found</body></html>\n",
        "random.webp": rng.bytes(3000), "zip.png": b"PK\x03\x04" + rng.bytes(500),
        "bomb.png": _png_header_only(200_000, 200_000),
        "zero_width.png": _png_header_only(0, 10),
        "bad_crc.png": png[:40] + bytes(b ^ 0xFF for b in png[40:80]) + png[80:],
        "gif_header.gif": b"GIF89a\x10\x00\x10\x00",
        "bmp_cut.bmp": b"BM" + rng.bytes(20),
        "tiff_garbage.tif": b"II*\x00" + rng.bytes(300),
    }
    for name, content in broken.items():
        (root / name).write_bytes(content)
        bad.append(root / name)
    (root / "dangling.jpg").symlink_to(root / "does_not_exist.jpg")
    bad.append(root / "dangling.jpg")
    return good, bad


# a clip of the video runs (4 frames every 2nd) spans 7 frames: these are padded, not skipped
SHORT = ("one_frame.mp4", "six_frames.avi")


def video_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    root.mkdir(parents=True, exist_ok=True)
    encode = video_tests.encode
    good = [encode(root / "good.mp4", 30), encode(root / "good.avi", 20, codec="mpeg4"),
            encode(root / "good_webm.webm", 12, codec="libvpx-vp9"), _vfr(root / "vfr.mkv"),
            *real_world_videos(root / "real_world").values()]
    broken_dir = root / "broken"
    broken_dir.mkdir()
    reference = encode(root / "reference.tmp", 30, fmt="mp4")
    bad = video_tests.broken_corpus(broken_dir, reference)
    reference.unlink()
    hevc = (root / "real_world" / "hevc_10bit.mp4").read_bytes()
    (broken_dir / "hevc_10bit_cut.mp4").write_bytes(hevc[: len(hevc) // 2])  # a copy stopped
    bad.append(broken_dir / "hevc_10bit_cut.mp4")
    good += [p for p in bad if p.name in SHORT]
    return good, [p for p in bad if p.name not in SHORT]


def _encode(path: Path, width: int, height: int, codec: str = "libx264",
            pix_fmt: str = "yuv420p", fmt: str | None = None, first: int = 0,
            n: int = 24, options: dict | None = None) -> Path:
    """``n`` numbered frames (``first`` ...) of ``width`` x ``height``, lossless where the
    codec allows."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25, options=options or {"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(first, first + n):
            frame = av.VideoFrame.from_ndarray(video_tests.numbered_frame(i, height, width),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _rotated(path: Path) -> Path:
    """A phone video: frames stored landscape with a 90 degree rotation in the track header's
    display matrix (written into the MP4 ``tkhd`` box; PyAV's muxer takes no rotation)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd")
    matrix = at + 4 + (52 if data[at + 4] == 1 else 40)  # after the version 1 / 0 fields
    one, fixed = 0x10000, 0x40000000  # 16.16 and 2.30 fixed point
    data[matrix:matrix + 36] = struct.pack(">9i", 0, one, 0, -one, 0, 0, 0, 0, fixed)
    path.write_bytes(bytes(data))
    return path


def real_world_videos(root: Path) -> dict[str, Path]:
    """Readable videos as people have them, each of its own size (sizes differ within the
    folder): portrait, odd-sized (63 x 37, 4:4:4: x264 refuses odd sizes in 4:2:0), rotation
    metadata, 10-bit HEVC (libx265, lossless), a wide 160 x 90, and a stream whose resolution
    changes midway (two MPEG-TS segments, as a cut live capture: frames scaled to the first
    size). Variable frame rate:
    ``_vfr``."""
    root.mkdir(parents=True, exist_ok=True)
    first = _encode(root / "first.tmp.ts", 64, 48, fmt="mpegts", n=12)
    second = _encode(root / "second.tmp.ts", 96, 64, fmt="mpegts", first=12, n=12)
    (root / "size_changes.ts").write_bytes(first.read_bytes() + second.read_bytes())
    first.unlink()
    second.unlink()
    return {
        "portrait": _encode(root / "portrait.mp4", 48, 64),
        "odd_size": _encode(root / "odd_63x37.mp4", 63, 37, pix_fmt="yuv444p"),
        "rotated": _rotated(_encode(root / "rotated_90.mp4", 96, 64)),
        "hevc_10bit": _encode(root / "hevc_10bit.mp4", 64, 48, codec="libx265",
                              pix_fmt="yuv420p10le",
                              options={"x265-params": "lossless=1:log-level=error"}),
        "wide": _encode(root / "wide_160x90.mp4", 160, 90),
        "size_changes": root / "size_changes.ts",
    }


def _vfr(path: Path) -> Path:
    """A variable-frame-rate video: frame durations of 1, 3 and 7 ticks (readable)."""
    import av

    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 100)
        pts = 0
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(video_tests.numbered_frame(i), format="rgb24")
            frame.pts = pts
            pts += (1, 3, 7)[i % 3]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def volume_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    good, bad = [], []
    for i in range(6):
        path = root / f"good_{i}.npy"
        np.save(path, rng.normal(size=(20, 24, 28)).astype(np.float32))
        good.append(path)
    np.savez(root / "any_name.npz", something=rng.normal(size=(4, 4, 4)))  # one array: used
    good.append(root / "any_name.npz")
    np.savez(root / "spaced.npz", volume=rng.normal(size=(20, 24, 28)).astype(np.float32),
             spacing=np.array([1.0, 1.0, 2.0]))
    good.append(root / "spaced.npz")

    def save(name: str, array) -> None:
        np.save(root / name, array, allow_pickle=True)
        bad.append(root / name)

    save("all_nan.npy", np.full((20, 24, 28), np.nan, np.float32))
    save("all_inf.npy", np.full((20, 24, 28), np.inf, np.float32))
    save("flat_2d.npy", rng.normal(size=(24, 28)).astype(np.float32))
    save("rank6.npy", rng.normal(size=(2, 2, 2, 2, 2, 2)).astype(np.float32))
    save("empty.npy", np.zeros((0, 24, 28), np.float32))
    save("objects.npy", np.array([{"pickled": "code"}], dtype=object))
    save("strings.npy", np.array(["a", "b"]))
    for name, content in {"zero.npy": b"", "text.npy": b"volume, honest\n" * 9,
                          "zip.npz": b"PK\x03\x04" + rng.bytes(200),
                          "zero.npz": b""}.items():
        (root / name).write_bytes(content)
        bad.append(root / name)
    whole = (root / "good_0.npy").read_bytes()
    (root / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    bad.append(root / "truncated.npy")
    with_nan = rng.normal(size=(20, 24, 28)).astype(np.float32)
    with_nan[:3] = np.nan  # a few NaN slices: refused rather than guessed at
    np.save(root / "some_nan.npy", with_nan)
    bad.append(root / "some_nan.npy")
    np.savez(root / "two_arrays.npz", a=np.zeros((8, 8, 8)), b=np.ones((8, 8, 8)))
    bad.append(root / "two_arrays.npz")
    return good, bad
