"""Figure 5: video loader throughput, ours against pytorchvideo, one worker, per CPU second.

One item = decode + sample the clip(s) + augment + draw the tube mask (``MaskingCollate``), in
this process, as one data-loader worker does it. Ours is the ``native`` reader (frames decoded
by index, only the cropped square converted to float); the peer is ``data.reader=pytorchvideo``:
pytorchvideo's ``EncodedVideo`` and ``RandomClipSampler`` with its default functional transforms
(uniform temporal subsample, random short-side scale, crop, flip, divide by 255, normalise).
Both read the same files with the same decoder, get the same items and seeds in the same order,
and are timed in one round robin, in CPU seconds of this process (``time.process_time``, as
figure 8): the other jobs of a shared machine stretch a long call's wall-clock time more than a
short one's, which inflated this ratio under load. With repeated sampling (``data.repeat=K``,
MAE-ST) an item is K clips; ours decodes the union of their frames once, pytorchvideo decodes
each clip's window.

The files: synthetic clips made once with PyAV (H.264, yuv420p, a keyframe every 2 s), 340x256
like Kinetics after the usual short-side-256 resize, 5 s at 30 fps, a camera panning over
scikit-image's photographs; cached in ``$MIM_CACHE_DIR`` (default ``~/.cache/mim``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bench.harness import Row, Settings, round_robin
from mim.data import MaskingCollate, sample_seed
from mim.masking import TubeMask

VERSION = "v1"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def clips(quick: bool) -> list[Path]:
    """The benchmark's video files, made on first use."""
    width, height, frames = (96, 72, 70) if quick else (340, 256, 150)
    base = Path(os.environ.get("MIM_CACHE_DIR") or Path("~/.cache/mim").expanduser())
    folder = base / "bench_video" / f"{VERSION}_{width}x{height}x{frames}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS[: 2 if quick else 4]:
        path = folder / f"{name}.mp4"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
            _encode(tmp, name, width, height, frames)
            tmp.replace(path)  # atomic: a killed run leaves no half-written clip
        paths.append(path)
    return paths


def _encode(path: Path, photo: str, width: int, height: int, frames: int) -> None:
    import av
    import skimage.data
    from PIL import Image

    image = getattr(skimage.data, photo)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    scale = 1.5 * max(width / image.shape[1], height / image.shape[0])
    big = Image.fromarray(image).resize((round(image.shape[1] * scale),
                                         round(image.shape[0] * scale)))
    room_x, room_y = big.width - width, big.height - height
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"g": "60", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            s = i / (frames - 1)  # a pan along the diagonal
            left, top = round(s * room_x), round(s * room_y)
            crop = np.asarray(big.crop((left, top, left + width, top + height)))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _loader(paths: list[Path], reader: str, decoder: str, repeat: int, quick: bool):
    from mim.modalities.video.config import VideoDataConfig
    from mim.modalities.video.dataset import VideoDataset, VideoItem

    cfg = VideoDataConfig(reader=reader, decoder=decoder, repeat=repeat,
                          num_frames=4 if quick else 16, input_size=64 if quick else 224)
    dataset = VideoDataset([VideoItem(p) for p in paths], cfg)
    grid = (cfg.num_frames // 2, cfg.input_size // 16, cfg.input_size // 16)
    collate = MaskingCollate(TubeMask(0.9), grid)
    position = [0]

    def one_item() -> None:
        index = position[0]
        position[0] += 1
        seed = sample_seed(0, 0, index)
        batch = collate([(dataset[(index % len(paths), seed)], seed)])
        assert batch.x.shape[0] == repeat, batch.x.shape

    return one_item


def run(settings: Settings) -> list[Row]:
    paths = clips(settings.quick)
    rounds = settings.rounds if settings.quick else 3 * settings.rounds
    rows = []
    for decoder, repeats in (("decord", (1, 2, 4)), ("pyav", (1,))):
        cases = {}
        for k in repeats:
            cases[f"ours K={k}"] = _loader(paths, "native", decoder, k, settings.quick)
            cases[f"pytorchvideo K={k}"] = _loader(paths, "pytorchvideo", decoder, k,
                                                   settings.quick)
        t = round_robin(cases, settings, rounds, clock=time.process_time)
        for k in repeats:
            ours, peer = f"ours K={k}", f"pytorchvideo K={k}"
            rows.append(Row(f"5. video loader, {decoder}, K={k}: ours vs pytorchvideo "
                            f"EncodedVideo + transforms (clips per CPU second, 1 worker, "
                            f"{rounds} items)", t.ratio(peer, ours),
                            f"ours {k / t.median(ours):.1f} / pytorchvideo "
                            f"{k / t.median(peer):.1f} clips per CPU second", 4.0))
    return rows
