"""``data.reader=pytorchvideo``: clips through pytorchvideo's EncodedVideo, RandomClipSampler and
functional transforms, with both decoders; seed-exact, broken files skipped with a reason, and
the same decoded frames as the native reader for an un-augmented window."""
from __future__ import annotations

import random
from pathlib import Path

import mim  # noqa: F401  (torchvision shim before anything imports timm)
import av
import numpy as np
import pytest
import torch

from mim.data import UnreadableSample
from mim.modalities.video import pvreader
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.dataset import VideoDataset, VideoItem

DECODERS = ("decord", "pyav")
SMALL = dict(num_frames=4, sampling_rate=2, input_size=32)  # a clip spans 7 frames


def frame(i: int, h: int, w: int) -> np.ndarray:
    out = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out[:8, :8] = 4 * i  # the frame number, readable after decoding
    return out


def encode(path: Path, n: int, h: int, w: int) -> Path:
    with av.open(str(path), "w") as container:  # lossless H.264 4:4:4, 25 fps
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i, h, w),
                                                                   format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pv")
    broken = root / "broken.mp4"
    broken.write_bytes(b"not a video\n" * 50)
    return {"wide": encode(root / "wide.mp4", 30, 48, 64),
            "square": encode(root / "square.mp4", 20, 32, 32), "broken": broken}


@pytest.mark.parametrize("decoder", DECODERS)
def test_pytorchvideo_reader_shape_normalisation_and_seeds(videos, decoder):
    cfg = VideoDataConfig(decoder=decoder, reader="pytorchvideo", **SMALL)
    ds = VideoDataset([VideoItem(videos["wide"])], cfg)
    state = random.getstate()
    a, label = ds.load(0, seed=7)
    assert random.getstate() == state  # the sampler's global draw was undone
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32 and label == -1
    # normalised with ImageNet mean / std: uint8 noise lands in about [-2.1, 2.7]
    assert -2.2 < a.min() < -1.5 and 2.0 < a.max() < 2.7 and abs(a.mean()) < 0.6
    assert torch.equal(a, ds.load(0, seed=7)[0])
    others = [ds.load(0, seed=s)[0] for s in range(8, 12)]
    assert all(not torch.equal(a, o) for o in others)
    k = VideoDataset([VideoItem(videos["wide"])],
                     VideoDataConfig(decoder=decoder, reader="pytorchvideo", repeat=2, **SMALL))
    x, _ = k.load(0, seed=3)
    assert x.shape == (2, 3, 4, 32, 32) and not torch.equal(x[0], x[1])


def test_window_is_a_pure_function_of_the_seed():
    windows = {pvreader.seeded_window(s, 0.28, 1.2) for s in range(30)}
    assert len(windows) == 30 and all(0 <= a and b <= 1.2 + 1e-9 for a, b in windows)
    assert pvreader.seeded_window(5, 0.28, 1.2) == pvreader.seeded_window(5, 0.28, 1.2)


@pytest.mark.parametrize("decoder", DECODERS)
def test_broken_and_too_short_files_are_skipped_with_a_reason(videos, decoder):
    cfg = VideoDataConfig(decoder=decoder, reader="pytorchvideo", **SMALL)
    ds = VideoDataset([VideoItem(videos["broken"]), VideoItem(videos["wide"])], cfg)
    with pytest.raises(UnreadableSample) as info:
        ds.load(0, seed=0)
    reason = str(info.value)
    assert reason and "\n" not in reason and len(reason) <= 200, reason
    sample = ds[(0, 0)]  # the core replaces it and reports the path
    assert sample.x.shape == (3, 4, 32, 32)
    assert sample.skipped and sample.skipped[0][0] == str(videos["broken"])
    long = VideoDataset([VideoItem(videos["square"])], VideoDataConfig(
        decoder=decoder, reader="pytorchvideo", num_frames=16, sampling_rate=4, input_size=32,
        pad_short=False))
    with pytest.raises(UnreadableSample, match="too short: 20 frames.*needs 61") as err:
        long.load(0, seed=0)
    assert err.value.kind.startswith("too short") and "data.pad_short=true" in err.value.remedy
    padded = VideoDataset([VideoItem(videos["square"])], VideoDataConfig(
        decoder=decoder, reader="pytorchvideo", num_frames=16, sampling_rate=4, input_size=32))
    x, _, how = padded.load_padded(0, seed=0)  # pytorchvideo's subsampling repeats frames
    assert x.shape == (3, 16, 32, 32) and how.startswith("20 frames, shorter than a clip (61")
    assert padded.load_padded(0, seed=0)[0].equal(x)  # still a pure function of the seed


@pytest.mark.parametrize("decoder", DECODERS)
def test_same_frames_as_the_native_reader_without_augmentation(videos, decoder, monkeypatch):
    plain = dict(decoder=decoder, min_scale=1.0, max_scale=1.0, hflip=0.0, **SMALL)
    native = VideoDataset([VideoItem(videos["square"])], VideoDataConfig(**plain))
    pv = VideoDataset([VideoItem(videos["square"])],
                      VideoDataConfig(reader="pytorchvideo", **plain))
    # both windows start at frame 0: frames 0, 2, 4, 6 of the 32 x 32 video, uncropped
    monkeypatch.setattr(pvreader, "seeded_window", lambda seed, clip, duration: (0.0, clip))
    monkeypatch.setattr(native.sampler, "windows", lambda seed, first, end: (
        [[0, 2, 4, 6]], [random.Random(seed)]))
    a, b = native.load(0, seed=1)[0], pv.load(0, seed=1)[0]
    assert a.shape == b.shape == (3, 4, 32, 32)
    assert (a - b).abs().max() < 0.05, (a - b).abs().max()
    levels = b[:, :, 2:6, 2:6].mean(dim=(0, 2, 3))  # normalised block level of frames 0..6
    assert torch.argsort(levels).tolist() == [0, 1, 2, 3]


def test_config_checks_the_reader():
    with pytest.raises(ValueError, match="data.reader: 'torchvision'"):
        VideoDataConfig(reader="torchvision")
    assert VideoDataConfig().reader == "native"


def frame_numbers(x: torch.Tensor) -> list[int]:
    """The frame numbers ``frame`` wrote into the 8 x 8 corner block, from a normalised clip."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = x[:, :, 2:6, 2:6].mean(dim=(2, 3)) * std[:, None] + mean[:, None]  # [3, T]
    return (pixels.mean(0) * 255 / 4).round().int().tolist()


@pytest.mark.parametrize("decoder", DECODERS)
def test_random_windows_are_every_nth_frame_inside_the_item_range(videos, decoder):
    cfg = VideoDataConfig(decoder=decoder, reader="pytorchvideo", min_scale=1.0, max_scale=1.0,
                          hflip=0.0, **SMALL)
    items = [VideoItem(videos["square"]), VideoItem(videos["square"], 0, 0.2, 0.6),
             VideoItem(videos["square"], 0, 5.0, 6.0)]  # frames 5..14; past the end (0.8 s)
    ds = VideoDataset(items, cfg)
    starts = set()
    for seed in range(8):
        whole = frame_numbers(ds.load(0, seed)[0])
        part = frame_numbers(ds.load(1, seed)[0])
        for numbers in (whole, part):
            assert numbers == list(range(numbers[0], numbers[0] + 8, 2)), numbers
        assert 0 <= whole[0] <= 13 and 5 <= part[0] and part[-1] <= 14, (whole, part)
        starts.add(whole[0])
    assert len(starts) > 2
    with pytest.raises(UnreadableSample, match="past the end"):
        ds.load(2, 0)
