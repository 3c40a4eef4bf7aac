"""Built-in demo videos, made once from scikit-image's bundled photographs (no download).

Twelve clips of 64 frames at 160x120: four real photos (astronaut, coffee, chelsea, rocket),
each filmed by a virtual camera that pans, zooms or orbits (a crop moving on an ellipse), encoded
with PyAV (H.264, yuv420p) so that training really runs the decoder. Plus the real animated GIF
scikit-image ships (``no_time_for_that_tiny.gif``, 24 frames), used in place.
Labels say how a clip was made: 0 pan, 1 zoom, 2 orbit, 3 animated (the GIF).

The cache is ``$MIM_CACHE_DIR/demo_video/<version>`` (default ``~/.cache/mim``); every file is
written under a temporary name and renamed atomically, so concurrent or killed runs never leave
a half-written file that a later run would use.
"""
from __future__ import annotations

import logging
import math
import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from mim.data.cache import cache_root

log = logging.getLogger("mim.data")

VERSION = "v1"  # bump when the recipe below changes
MOTIONS = ("pan", "zoom", "orbit")
CLASSES = (*MOTIONS, "animated")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FRAMES, WIDTH, HEIGHT, FPS = 64, 160, 120, 25
GIF = "no_time_for_that_tiny.gif"


def cache_dir() -> Path:
    return cache_root() / "demo_video" / VERSION


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _boxes(motion: str, variant: int, height: int, width: int) -> list[tuple[float, ...]]:
    """One crop box (left, top, right, bottom) per frame, with the output's 4:3 aspect."""
    aspect = WIDTH / HEIGHT
    base_h = min(height, width / aspect)  # the largest 4:3 box that fits
    boxes = []
    for i in range(FRAMES):
        s = i / (FRAMES - 1)  # 0 -> 1 over the clip
        if motion == "pan":  # a 60 % box sliding across, direction by variant
            h = 0.6 * base_h
            w = h * aspect
            u = s if variant % 2 == 0 else 1 - s
            cx = w / 2 + u * (width - w)
            cy = h / 2 + (u if variant >= 2 else 0.5) * (height - h)
        elif motion == "zoom":  # 100 % -> 40 % around the centre (out when variant is odd)
            u = s if variant % 2 == 0 else 1 - s
            h = base_h * (1.0 - 0.6 * u)
            w = h * aspect
            cx, cy = width / 2, height / 2
        else:  # orbit: a 55 % box on an ellipse, one turn, starting angle by variant
            h = 0.55 * base_h
            w = h * aspect
            angle = 2 * math.pi * s + variant * math.pi / 2
            cx = width / 2 + 0.5 * (width - w) * math.cos(angle)
            cy = height / 2 + 0.5 * (height - h) * math.sin(angle)
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def render(photo: str, motion: str, variant: int) -> list[np.ndarray]:
    """The frames of one clip, uint8 [HEIGHT, WIDTH, 3] each."""
    image = Image.fromarray(_photo(photo))
    return [np.asarray(image.resize((WIDTH, HEIGHT), Image.BILINEAR, box=box))
            for box in _boxes(motion, variant, image.height, image.width)]


def encode(frames: list[np.ndarray], path: Path, fps: int = FPS) -> None:
    """H.264 (yuv420p) in MP4 via PyAV, written to a temporary name and renamed."""
    import av

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps,
                                          options={"crf": "18", "preset": "fast"})
            stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = 16  # a keyframe every 16 frames: cheap seeking
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def clips() -> list[tuple[str, str, str, int]]:
    """(file name, photo, motion, variant) of every demo clip."""
    return [(f"{motion}_{photo}.mp4", photo, motion, variant)
            for variant, photo in enumerate(PHOTOS) for motion in MOTIONS]


def _frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for p in container.demux(stream) if p.size)


def demo_files(min_frames: int = 1) -> list[tuple[Path, int]]:
    """Every demo video with its label, encoding the missing ones into the cache first.

    The GIF (24 frames) joins only when it holds ``min_frames`` (the span of one clip): with
    VideoMAE's 16 frames every 4th it would only ever be skipped as too short.
    """
    import skimage

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    made, files = 0, []
    for name, photo, motion, variant in clips():
        path = folder / name
        if not path.is_file():
            encode(render(photo, motion, variant), path)
            made += 1
        files.append((path, CLASSES.index(motion)))
    if made:
        log.info("demo videos: encoded %d clips into %s", made, folder)
    gif = Path(skimage.__file__).parent / "data" / GIF
    if gif.is_file() and _frame_count(gif) >= min_frames:
        files.append((gif, CLASSES.index("animated")))
    return files
