"""Video decoded at the size the clip needs keeps VideoMAE's views: the boxes are drawn on the
file's full frame size, and frames converted smaller (decord's width/height, PyAV's RGB
conversion) give the full decode's crop of the same box within 35 dB PSNR, the image
pipeline's bound (tests/unit/test_image_pipeline.py) under the same ``REDUCE_MARGIN``."""
from __future__ import annotations

import os
import random

import av
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.dataset import VideoDataset, VideoItem
from mim.modalities.video.decode import open_video
from mim.modalities.video.source import decoder_threads
from mim.modalities.video.transforms import ClipSampler, ClipTransform
from tests.reliability.hostile_media import _rotated
from tests.unit.test_image_pipeline import psnr

DECODERS = ("decord", "pyav")
SMALL = dict(num_frames=4, sampling_rate=2, input_size=64)  # crops of 500-630 px: scale ~1/4


def photo_video(path, width: int = 960, height: int = 720, frames: int = 16):
    """H.264 (yuv420p) of a camera panning over a photograph, as natural video is."""
    photo = Image.fromarray(skimage.data.astronaut())
    big = photo.resize((round(width * 1.4), round(width * 1.4)), Image.BICUBIC)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": "12", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            crop = np.asarray(big.crop((2 * i, i, 2 * i + width, i + height)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("reduced")
    return {"landscape": photo_video(root / "photo.mp4"),
            "rotated": _rotated(photo_video(root / "phone.mp4"))}  # upright 720 wide, 960 high


def levels(x: torch.Tensor, cfg: VideoDataConfig) -> torch.Tensor:
    """Normalised views [..., 3, T, S, S] back to grey levels."""
    mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1, 1)
    return (x * std + mean) * 255


class FullSize(ClipTransform):
    """The pretraining transform with every frame decoded at full size."""

    def resolution(self, height: int, width: int, rng: random.Random) -> float:
        return 1.0


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["landscape", "rotated"])
def test_reduced_decode_matches_the_full_decode_of_the_same_box(clips, decoder, name):
    transform = ClipTransform(VideoDataConfig(**SMALL))
    upright = (720, 960) if name == "landscape" else (960, 720)
    indices = [3, 5, 7, 9]
    worst, sizes = float("inf"), set()
    with open_video(clips[name], decoder) as video:
        full = video.read(indices)
        assert full.shape[1:3] == upright and video.frame_size == upright
        for seed in range(12):
            scale = transform.resolution(*upright, random.Random(seed))
            assert 0.2 < scale < 0.5
            small = video.read(indices, lambda h, w: transform.resolution(h, w,
                                                                          random.Random(seed)))
            assert video.frame_size == upright
            sizes.add(small.shape[1:3])
            fast = transform.crop_flip(small, random.Random(seed), video.frame_size)
            exact = transform.crop_flip(full, random.Random(seed))
            worst = min(worst, psnr(fast, exact))
    assert max(h for h, _ in sizes) <= upright[0] // 2, sizes
    assert worst >= 35.0, f"worst PSNR {worst:.1f} dB ({decoder}, {name}, sizes {sizes})"


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_dataset_decodes_reduced_and_stays_a_function_of_the_seed(clips, decoder):
    """K=2 views from one reduced decode: the same for the same seed, and the views a full
    decode gives within 35 dB PSNR (in grey levels)."""
    cfg = VideoDataConfig(decoder=decoder, repeat=2, **SMALL)
    item = [VideoItem(clips["landscape"])]
    reduced, full = VideoDataset(item, cfg), VideoDataset(item, cfg, transform=FullSize(cfg))
    for seed in (0, 7):
        x, _ = reduced.load(0, seed)
        assert x.shape == (2, 3, 4, 64, 64)
        assert torch.equal(x, reduced.load(0, seed)[0])
        assert psnr(levels(x, cfg), levels(full.load(0, seed)[0], cfg)) >= 35.0


def test_the_union_of_views_decodes_at_the_largest_resolution_any_view_needs(clips):
    cfg = VideoDataConfig(repeat=4, **SMALL)
    sampler, asked = ClipSampler(cfg), []
    with open_video(clips["landscape"], "pyav") as video:
        read = video.read
        video.read = lambda indices, resolution: asked.append(resolution(720, 960)) or read(
            indices, resolution)
        sampler(video, 3, 0, video.num_frames)
    _, rngs = sampler.windows(3, 0, 16)
    needs = [sampler.transform.resolution(720, 960, rng) for rng in rngs]
    assert asked == [max(needs)] and len(set(needs)) > 1


class Threads(torch.utils.data.Dataset):
    """What an open video of each decoder is given, in whichever process reads it."""

    def __init__(self, path):
        self.path = path

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        with open_video(self.path, "pyav") as pyav, open_video(self.path, "decord") as video:
            pyav_threads = pyav._stream.codec_context.thread_count
            return decoder_threads(), pyav_threads, video._threads


def test_decoder_threads_share_the_cores_among_the_loader_workers(clips):
    cores = len(os.sched_getaffinity(0))
    data = Threads(clips["landscape"])
    assert data[0] == (1, 1, 1)  # the main process: one (it forks the workers afterwards)
    # spawned, not forked: a worker forked from this process, which has decoded with several
    # threads in the tests before, once hung starting up (why the main process now uses one)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, timeout=120,
                                         multiprocessing_context="spawn")
    assert {tuple(row) for row in loader} == {(max(1, cores // 2),) * 3}
