"""PyAV's reader: frames by index (a pts seek past ``SEEK_AFTER``, else decoding from the
start), scaled to the size the clip needs while FFmpeg's swscale converts them to RGB."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from mim.data import UnreadableSample
from mim.modalities.video.source import (DAMAGED, Resolution, Video, decoder_threads, kind_of,
                                         reduced, short)

SEEK_AFTER = 64  # PyAV: seek (keyframe + pts arithmetic) when the first wanted frame is later


class PyAVVideo(Video):
    def __init__(self, path: Path):
        import av

        self._rewind = False  # True once the container is no longer at its start
        try:
            self._container = av.open(str(path))
        except Exception as exc:  # noqa: BLE001 (av.error.* and OSError)
            raise UnreadableSample(f"cannot open: {short(exc)}") from exc
        try:
            if not self._container.streams.video:
                raise UnreadableSample("no video stream (audio only, or not a video)")
            kind = self._container.format.name
            if kind == "image2" or kind.endswith("_pipe"):
                raise UnreadableSample(f"an image, not a video (format {kind})")
            self._stream = self._container.streams.video[0]
            rate = self._stream.average_rate or self._stream.guessed_rate
            if not rate or rate <= 0:
                raise UnreadableSample("no frame rate in the video stream")
            self.fps = float(rate)
            self._rate = Fraction(rate)
            context = self._stream.codec_context  # its size follows the decoder: keep the first
            self._size = (context.width, context.height)
            threads = decoder_threads()
            context.thread_count = threads  # PyAV's default, 0, is one per core in every worker
            if threads > 1:
                context.thread_type = "AUTO"  # frame and slice threads, as FFmpeg chooses
            self._out: tuple[int, int] | None = None  # (width, height) of this read's frames
            self._resolution: Resolution = None
            self.num_frames = self._stream.frames or self._count_packets()
            if self.num_frames < 1:
                raise UnreadableSample("video stream holds no frames")
        except UnreadableSample:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise UnreadableSample(f"cannot read the stream: {short(exc)}") from exc

    def _count_packets(self) -> int:
        """Frame count where the header has none (Matroska, WebM, GIF): demux, no decoding."""
        count = sum(1 for packet in self._container.demux(self._stream) if packet.size)
        self._rewind = True
        return count

    def read(self, indices: list[int], resolution: Resolution = None) -> np.ndarray:
        wanted = sorted(set(indices))
        self._out, self._resolution = None, resolution  # sized at the first frame (its rotation)
        try:
            found = self._seek_read(wanted) if wanted[0] >= SEEK_AFTER else None
            if found is None or len(found) < len(wanted):  # variable frame rate, or truncated
                found = self._linear_read(wanted)
        except UnreadableSample as exc:
            raise kind_of(exc, DAMAGED)
        except Exception as exc:  # noqa: BLE001
            raise UnreadableSample(f"decode failed (corrupt data?): {short(exc)}",
                                   DAMAGED) from exc
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnreadableSample(f"truncated: frame {missing[0]} of {self.num_frames} could "
                                   f"not be decoded ({len(found)} of {len(wanted)} found)",
                                   DAMAGED)
        return np.stack([found[i] for i in indices])

    def _rgb(self, frame) -> np.ndarray:
        """uint8 [H, W, 3] as decord gives it: a frame whose size changed mid-stream scaled to
        the stream's first size (or this read's reduced size), then turned upright by the
        rotation metadata (phone videos)."""
        turns = round(getattr(frame, "rotation", 0) / 90) % 4  # degrees counter-clockwise
        if self._out is None:
            width, height = self._size
            self.frame_size = (width, height) if turns % 2 else (height, width)  # upright
            scale = self._resolution(*self.frame_size) if self._resolution else 1.0
            self._out = reduced(width, height, scale) if scale < 1 else self._size
        width, height = self._out
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
        return np.rot90(rgb, turns) if turns else rgb

    def _linear_read(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the first frame, counting: exact for any video."""
        if self._rewind:
            self._container.seek(0, stream=self._stream, backward=True)
        self._rewind = True
        targets, found = set(wanted), {}
        for index, frame in enumerate(self._container.decode(self._stream)):
            if index in targets:
                found[index] = self._rgb(frame)
            if index >= wanted[-1]:
                break
        return found

    def _seek_read(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Seek to the keyframe before the first wanted frame and index frames by their pts
        (exact at a constant frame rate); None when pts are missing or the seek overshot."""
        stream, tb = self._stream, self._stream.time_base
        if tb is None:
            return None
        start = stream.start_time or 0
        to_pts = lambda i: start + int(Fraction(i) / self._rate / tb)  # noqa: E731
        self._container.seek(to_pts(wanted[0]), stream=stream, backward=True, any_frame=False)
        self._rewind = True
        targets, found, first = set(wanted), {}, True
        for frame in self._container.decode(stream):
            if frame.pts is None:
                return None
            index = round((frame.pts - start) * tb * self._rate)
            if first and index > wanted[0]:
                return None  # landed after the first wanted frame: decode linearly instead
            first = False
            if index in targets:
                found[index] = self._rgb(frame)
            if index >= wanted[-1]:
                break
        return found

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()
