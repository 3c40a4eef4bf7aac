"""The video modality on real files the tests encode with PyAV: both decoders agree frame for
frame, clip sampling is a pure function of the seed, K views, too-short clips, list files, and a
corpus of broken media iterated without a crash, every broken file reported with a reason."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import mim  # noqa: F401  (torchvision shim before anything imports timm)
import av
import numpy as np
import pytest
import torch
from PIL import Image

from mim.data import UnreadableSample
from mim.spec import Panels
from mim.modalities.video import decode, demo
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.dataset import VideoDataset, VideoItem, build_dataset, read_list
from mim.modalities.video.transforms import ClipTransform, clip_indices, crop_box
from mim.modalities.video.pictures import render

DECODERS = ("decord", "pyav")
SMALL = dict(num_frames=4, sampling_rate=2, input_size=32)  # a clip spans 7 frames


def numbered_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i: a gray block of level 2i (readable after decoding) next to textured noise."""
    frame = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame[:16, :16] = 2 * i
    return frame


def level(frames: np.ndarray) -> np.ndarray:
    """The frame number written by ``numbered_frame``, read back from decoded frames."""
    return np.round(frames[:, 4:12, 4:12].astype(float).mean(axis=(1, 2, 3)) / 2).astype(int)


def encode(path: Path, n: int, codec: str = "libx264", fmt: str | None = None,
           options: dict | None = None, pix_fmt: str = "yuv420p", fps: int = 25) -> Path:
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        opts = {"qp": "0"} if codec == "libx264" else {"qscale": "1"} if codec == "mpeg4" else {}
        stream = container.add_stream(codec, rate=fps, options=opts)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def audio_only(path: Path, codec: str, fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=16000)
        stream.layout = "mono"
        size = stream.codec_context.frame_size or 1024
        for k in range(10):
            samples = (np.sin(np.arange(k * size, (k + 1) * size) / 9) * 8000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        # lossless H.264 (4:4:4) and high-quality MPEG-4 in Matroska (no frame count in header)
        "mp4": encode(root / "lossless.mp4", 120, pix_fmt="yuv444p"),
        "mkv": encode(root / "mpeg4.mkv", 100, codec="mpeg4"),
        "short": encode(root / "short.mp4", 5),
    }


@pytest.mark.parametrize("name", ["mp4", "mkv"])
def test_decord_and_pyav_return_the_same_frames(videos, name, monkeypatch):
    linear = []
    original = decode.PyAVVideo._linear_read
    monkeypatch.setattr(decode.PyAVVideo, "_linear_read",
                        lambda self, wanted: linear.append(wanted) or original(self, wanted))
    # unsorted, repeated; the second set starts past SEEK_AFTER, so PyAV seeks to a keyframe
    for indices, seeks in (([0, 3, 17, 40, 71, 3], False), ([66, 70, 99, 71, 80, 66], True)):
        decoded = {}
        for decoder in DECODERS:
            with decode.open_video(videos[name], decoder) as video:
                assert video.num_frames == (120 if name == "mp4" else 100)
                assert video.fps == pytest.approx(25)
                linear.clear()
                decoded[decoder] = video.read(indices)
        assert bool(linear) != seeks  # the seek path found every frame, or was not taken
        with monkeypatch.context() as patch:  # PyAV decoding linearly from frame 0
            patch.setattr(decode, "SEEK_AFTER", 10**9)
            with decode.open_video(videos[name], "pyav") as video:
                decoded["linear"] = video.read(indices)
        assert decoded["decord"].shape == (len(indices), 48, 64, 3)
        assert decoded["decord"].dtype == np.uint8
        for other in ("pyav", "linear"):
            diff = np.abs(decoded["decord"].astype(int) - decoded[other].astype(int))
            assert diff.max() <= 2, (other, diff.max())
        # the right frames, not just equal ones (lossy MPEG-4 skips small changes for a while)
        error = np.abs(level(decoded["decord"]) - np.array(indices)).max()
        assert error == 0 if name == "mp4" else error <= 3, level(decoded["decord"])


def test_clip_sampling_is_a_pure_function_of_the_seed(videos):
    for decoder in DECODERS:
        ds = VideoDataset([VideoItem(videos["mp4"])], VideoDataConfig(decoder=decoder, **SMALL))
        a, _ = ds.load(0, seed=11)
        b, _ = ds.load(0, seed=11)
        assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32
        assert torch.equal(a, b)
        others = [ds.load(0, seed=s)[0] for s in range(12, 16)]
        assert all(not torch.equal(a, o) for o in others)
    starts = {clip_indices(random.Random(s), 0, 120, 16, 4, False)[0] for s in range(50)}
    assert len(starts) > 20 and min(starts) >= 0 and max(starts) <= 120 - 61
    window = clip_indices(random.Random(3), 10, 30, 4, 5, False)
    assert window == list(range(window[0], window[0] + 16, 5)) and window[-1] < 30


def test_repeat_gives_k_different_views_from_one_decoding(videos, monkeypatch):
    cfg = VideoDataConfig(repeat=3, **SMALL)
    ds = VideoDataset([VideoItem(videos["mp4"])], cfg)
    reads = []
    original = decode.DecordVideo.read
    monkeypatch.setattr(decode.DecordVideo, "read",
                        lambda self, idx, *size: reads.append(list(idx)) or original(self, idx,
                                                                                     *size))
    x, _ = ds.load(0, seed=5)
    assert x.shape == (cfg.repeat, 3, 4, 32, 32)
    assert len(reads) == 1  # the union of the three windows, decoded once
    assert all(not torch.equal(x[i], x[j]) for i in range(3) for j in range(i + 1, 3))
    y, _ = ds.load(0, seed=5)
    assert torch.equal(x, y)


@pytest.mark.parametrize("decoder", DECODERS)
def test_too_short_is_skipped_unless_padded(videos, decoder):
    item = [VideoItem(videos["short"])]
    strict = VideoDataset(item, VideoDataConfig(decoder=decoder, pad_short=False, **SMALL))
    with pytest.raises(UnreadableSample, match="too short: 5 frames.*needs 7.*pad_short"):
        strict.load(0, seed=0)
    padded = VideoDataset(item, VideoDataConfig(decoder=decoder, pad_short=True, **SMALL))
    x, _, how = padded.load_padded(0, seed=0)  # frames 0, 2, 4, 4
    assert how.startswith("5 frames, shorter than a clip (7 frames") and x.shape == (3, 4, 32, 32)
    assert VideoDataset(item, VideoDataConfig(decoder=decoder, **SMALL)).load_padded(0, 0)[2]
    assert torch.equal(x[:, 2], x[:, 3]) and not torch.equal(x[:, 1], x[:, 2])


def broken_corpus(root: Path, good: Path) -> list[Path]:
    """At least 20 unusable media files, each a different way of being broken."""
    whole = good.read_bytes()
    files: dict[str, bytes | None] = {"zero.mp4": b"", "zeros.mp4": bytes(300),
                                      "random.mp4": np.random.default_rng(1).bytes(5000),
                                      "text.avi": b"not a video\n" * 80,
                                      "text.gif": b"GIF? no, text\n" * 20,
                                      "page.mov": b"<html><body>404</body></html>\n" * 30,
                                      "header_only.gif": None}
    for fraction in (0.05, 0.3, 0.6, 0.95):  # moov at the end: nothing left to open
        files[f"truncated_{int(fraction * 100)}.mp4"] = whole[: int(len(whole) * fraction)]
    head = bytearray(whole)
    head[:400] = bytes(b ^ 0x5A for b in head[:400])
    files["corrupt_head.mp4"] = bytes(head)
    for name, content in files.items():
        if content is not None:
            (root / name).write_bytes(content)
    # flipped bytes in the packets of the first keyframe, which every clip needs
    small = encode(root / "small.tmp.mp4", 12).read_bytes()
    start = small.index(b"mdat") + 12
    (root / "corrupt_packets.mp4").write_bytes(
        small[:start] + bytes(b ^ 0xFF for b in small[start:start + 2000]) + small[start + 2000:])
    (root / "small.tmp.mp4").unlink()
    frames = [Image.fromarray(numbered_frame(i)) for i in range(12)]
    frames[0].save(root / "full.gif", save_all=True, append_images=frames[1:], duration=40)
    (root / "header_only.gif").write_bytes((root / "full.gif").read_bytes()[:20])
    (root / "full.gif").unlink()
    # moov first (faststart), cut just after the packets begin: the header promises frames
    faststart = encode(root / "fs.tmp.mp4", 30, fmt="mp4", options={"movflags": "faststart"})
    data = faststart.read_bytes()
    (root / "truncated_after_header.mp4").write_bytes(data[: data.index(b"mdat") + 64])
    faststart.unlink()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(root / "png_renamed.mp4", format="PNG")
    Image.new("RGB", (32, 32), (20, 200, 20)).save(root / "jpeg_renamed.mkv", format="JPEG")
    audio_only(root / "audio_only_aac.mp4", "aac", "mp4")
    audio_only(root / "audio_only_pcm.mkv", "pcm_s16le", "matroska")
    audio_only(root / "audio_only_mp3.avi", "libmp3lame", "avi")
    (root / "notes.m4a").write_bytes(b"an audio extension: not scanned")
    encode(root / "one_frame.mp4", 1)
    encode(root / "six_frames.avi", 6, codec="mpeg4")  # a clip needs 7
    return sorted(p for p in root.iterdir() if p.suffix != ".m4a")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, videos) -> tuple[Path, list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("corpus")
    good = [encode(root / "good.mp4", 30), encode(root / "good.avi", 20, codec="mpeg4"),
            encode(root / "good.webm", 12, codec="libvpx-vp9"),
            encode(root / "mkv_content.mp4", 16, codec="mpeg4", fmt="matroska")]
    frames = [Image.fromarray(numbered_frame(i)) for i in range(10)]
    frames[0].save(root / "good.gif", save_all=True, append_images=frames[1:], duration=40)
    good.append(root / "good.gif")
    (root / "broken").mkdir()
    broken = broken_corpus(root / "broken", videos["mp4"])
    (root / "notes.txt").write_text("not a video extension, not an item")
    (root / "folder.mp4").mkdir()  # a directory with a video name: walked into, not an item
    return root, good, broken


@pytest.mark.parametrize("decoder", DECODERS)
def test_broken_corpus_is_iterated_and_every_file_reported(corpus, decoder):
    root, good, broken = corpus
    assert len(broken) >= 20
    # too-short files are skipped too (they are padded by default: tests/e2e/test_short_videos.py)
    ds = build_dataset(VideoDataConfig(root=str(root), decoder=decoder, pad_short=False, **SMALL))
    assert sorted(item.path for item in ds.items) == sorted(good + broken)
    reasons: dict[str, str] = {}
    skipped_total = 0
    for i in range(len(ds)):
        sample = ds[(i, 1000 + i)]
        assert sample.x.shape == (3, 4, 32, 32) and torch.isfinite(sample.x).all()
        skipped_total += len(sample.skipped)
        for path, reason in sample.skipped:
            assert reason and "\n" not in reason and len(reason) <= 200, reason
            reasons[path] = reason
    assert sorted(reasons) == sorted(map(str, broken)), (set(map(str, broken)) ^ set(reasons))
    assert skipped_total >= len(broken)
    expect = {"zero.mp4": "empty file", "one_frame.mp4": "too short: 1 frames",
              "six_frames.avi": "too short: 6 frames", "audio_only_aac.mp4": "no video stream",
              "audio_only_pcm.mkv": "no video stream", "png_renamed.mp4": "image",
              "audio_only_mp3.avi": "no video stream"}
    for name, text in expect.items():
        assert text in reasons[str(root / "broken" / name)], (name, reasons)


def test_gifs_always_go_through_pyav(corpus):
    root, good, _ = corpus
    with decode.open_video(root / "good.gif", "decord") as video:
        assert isinstance(video, decode.PyAVVideo)
        assert video.num_frames == 10
        assert level(video.read([0, 9])).tolist() == [0, 9]


def test_list_file_labels_windows_and_problems(videos, tmp_path):
    spaced = tmp_path / "with space"
    spaced.mkdir()
    shutil.copy(videos["mp4"], spaced / "clip one.mp4")
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    rel = Path(os.path.relpath(videos["mp4"], listing.parent))  # relative to the list's folder
    lines = [
        "# path [label] [start_sec end_sec]", "",
        f"{videos['mp4']} walk 2.0 3.0",
        f"{rel} run",
        f"'{spaced / 'clip one.mp4'}' walk  # quoted path with a space",
        f"{videos['mkv']}",
        f"{videos['mp4']} 0.5 1.0",
        f"{videos['mp4']} run 30 40",  # past the end (4.8 s)
        "missing.mp4 run", f"'{spaced}' walk",
    ]
    listing.write_text("\n".join(lines) + "\n")
    items, classes = read_list(listing)
    assert classes == ["run", "walk"]
    assert [i.label for i in items] == [1, 0, 1, -1, -1, 0, 0, 1]
    assert items[1].path == listing.parent / rel and items[1].path.is_file()
    assert (items[0].start, items[0].end, items[4].start, items[3].start) == (2.0, 3.0, 0.5, None)

    ds = build_dataset(VideoDataConfig(list_file=str(listing), hflip=0.0, **SMALL))
    assert len(ds) == 8 and ds.labels == [1, 0, 1, -1, -1, 0, 0, 1]
    for seed in range(6):
        window = ds.sampler.windows(seed, 50, 75)[0][0]  # frames of 2.0-3.0 s at 25 fps
        assert 50 <= window[0] and window[-1] < 75
        x, label = ds.load(0, seed)
        assert label == 1 and x.shape == (3, 4, 32, 32)
    problems = {}
    for i in range(len(ds)):
        problems.update(dict(ds[(i, 0)].skipped))
    assert set(problems) == {ds.describe(5), ds.describe(6), ds.describe(7)}
    assert "past the end" in problems[ds.describe(5)] and "[30-40 s]" in ds.describe(5)
    assert problems[ds.describe(6)] == "file not found"
    assert "directory" in problems[ds.describe(7)]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{videos['mp4']} 1\nx a b c\n")
    with pytest.raises(ValueError, match="data.list_file: .* line 2: expected"):
        read_list(bad)
    bad.write_text("a.mp4 0 3 2\n")
    with pytest.raises(ValueError, match="line 1: need 0 <= start_sec < end_sec"):
        read_list(bad)
    numbered = tmp_path / "ints.txt"
    numbered.write_text("a.mp4 3\nb.mp4 0 1.5 2\n")
    items, classes = read_list(numbered)
    assert classes == [] and [i.label for i in items] == [3, 0] and items[1].end == 2.0


def test_config_checks_and_data_errors(tmp_path):
    with pytest.raises(ValueError, match="data.decoder: 'opencv'"):
        VideoDataConfig(decoder="opencv")
    with pytest.raises(ValueError, match="data.num_frames"):
        VideoDataConfig(num_frames=0)
    with pytest.raises(ValueError, match="data.min_scale"):
        VideoDataConfig(min_scale=0.8)
    with pytest.raises(FileNotFoundError, match="data.root: .* is not a directory"):
        build_dataset(VideoDataConfig(root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="data.root: no video files"):
        build_dataset(VideoDataConfig(root=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match="data.list_file"):
        build_dataset(VideoDataConfig(list_file=str(tmp_path / "none.txt")))


def test_demo_videos_are_made_once_atomically_and_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path / "cache"))
    folder = demo.cache_dir()
    assert folder == tmp_path / "cache" / "demo_video" / demo.VERSION
    ds = build_dataset(VideoDataConfig(num_frames=8, sampling_rate=2, input_size=32))
    made = sorted(folder.iterdir())
    assert len(made) == 12 and all(p.suffix == ".mp4" for p in made)  # no temporary leftovers
    assert ds.items[-1].path.name == demo.GIF and ds.labels[-1] == demo.CLASSES.index("animated")
    assert sorted(set(ds.labels[:-1])) == [0, 1, 2] and ds.classes == list(demo.CLASSES)
    stamps = [p.stat().st_mtime_ns for p in made]
    again = build_dataset(VideoDataConfig())  # 16 x 4: the 24-frame GIF would be too short
    assert [p.stat().st_mtime_ns for p in sorted(folder.iterdir())] == stamps
    assert len(again) == 12
    x, label = ds.load(0, seed=3)
    assert x.shape == (3, 8, 32, 32) and label == 0


def test_visualize_writes_a_gif_and_a_frame_strip(tmp_path):
    cfg = VideoDataConfig(num_frames=6, input_size=32)
    x = torch.randn(2, 3, 6, 32, 32)
    panels = Panels(x, x * 0, x, x)
    png = render(panels, cfg, tmp_path / "step_00000001")
    assert png == tmp_path / "step_00000001.png"
    picture = Image.open(png)
    tile = 96  # 32 px clips are enlarged 3x
    assert picture.size == (4 * 4 * tile + 4 * 3 * 2 + 3 * 8, 2 * tile + 2)
    gif = Image.open(tmp_path / "step_00000001.gif")
    assert gif.n_frames == 6 and gif.size == (4 * tile + 3 * 8, 2 * tile + 2)


@pytest.mark.parametrize("size", [24, 40])  # the crop is scaled up, and down (antialiased)
def test_clip_transform_matches_a_float_resize_within_one_level(size) -> None:
    """The uint8 resize and fused normalisation give the float pipeline's clip, rounded to
    whole levels: within one level (1 / 255 / std) everywhere, flips and crops alike."""
    cfg = VideoDataConfig(num_frames=4, input_size=size, hflip=0.5)
    transform = ClipTransform(cfg)
    frames = np.random.default_rng(0).integers(0, 256, (4, 30, 44, 3), dtype=np.uint8)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1, 1), torch.tensor(cfg.std).view(3, 1, 1, 1)
    for seed in range(6):
        rng = random.Random(seed)
        top, left, side = crop_box(30, 44, size, (cfg.min_scale, cfg.max_scale), rng)
        want = torch.as_tensor(frames[:, top:top + side, left:left + side]).permute(0, 3, 1, 2)
        want = torch.nn.functional.interpolate(want.float(), size=(size, size), mode="bilinear",
                                               antialias=side > size)
        if rng.random() < cfg.hflip:
            want = want.flip(-1)
        want = (want.permute(1, 0, 2, 3) / 255 - mean) / std  # [3, T, size, size]
        got = transform(frames, random.Random(seed))
        assert got.shape == (3, 4, size, size) and got.is_contiguous()
        one_level = 1 / 255 / std
        assert ((got - want).abs() <= one_level * 1.001).all()
    white = transform(np.full((4, 30, 44, 3), 255, np.uint8), random.Random(0))
    torch.testing.assert_close(white, ((1 - mean) / std).expand_as(white))
