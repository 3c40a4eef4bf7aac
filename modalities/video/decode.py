"""Open a video file and decode frames by index, with decord (default) or PyAV.

decord publishes wheels only for Linux x86_64 and Windows x86_64 (pyproject.toml installs it only
there): where it cannot be imported, ``data.decoder=decord`` decodes with PyAV instead, said once
in the log (``resolve_decoder``).

Frames are addressed by index, not by time: a clip is a pure function of the sample's seed,
and both decoders return the same frames for the same indices (checked by the tests).
pytorchvideo's time-based ``EncodedVideo.get_clip`` (``data.reader=pytorchvideo``,
``pvreader.py``) converts every frame of the window to float32 and measured 2x (decord) to 10x
(PyAV) slower than decoding the indices directly, so it is not the default.

GIFs and MPEG transport streams always go through PyAV (``TRANSPORT_STREAMS``). Frames come
upright (rotation metadata applied), at the stream's first size. Every failure becomes
``UnreadableSample`` with a short reason and a kind, the same for both decoders: ``EMPTY``,
``NOT_VIDEO`` (cannot be opened), ``DAMAGED`` (frames fail to decode).
"""
from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path

import numpy as np

from mim.data import UnreadableSample

EMPTY = "empty"
MISSING = "missing"
NOT_VIDEO = "not a video (cannot be opened)"
DAMAGED = "truncated or corrupt (frames fail to decode)"
PAST_END = "start past the end of the video (data.list_file)"
# transport streams (cut live captures) may change size midway: decord's frames after the
# change depend on where it began decoding (18 to 31 levels off a resize here), PyAV's do not
TRANSPORT_STREAMS = frozenset({".ts", ".mts", ".m2ts"})
SEEK_AFTER = 64  # PyAV: seek (keyframe + pts arithmetic) when the first wanted frame is later

log = logging.getLogger("mim.data")


class Video(ABC):
    """An open video: ``num_frames``, ``fps`` and ``read(indices) -> uint8 [N, H, W, 3]``."""

    num_frames: int
    fps: float

    @abstractmethod
    def read(self, indices: list[int]) -> np.ndarray:
        """Frames at ``indices`` (in order) -> uint8 [N, H, W, 3]."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UnreadableSample("file not found", MISSING)
    if not path.is_file():
        raise UnreadableSample("not a regular file (a directory?)", NOT_VIDEO)
    if path.stat().st_size == 0:
        raise UnreadableSample("empty file (0 bytes)", EMPTY)


def _is_gif(path: Path) -> bool:
    if path.suffix.lower() == ".gif":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"GIF8"


def open_video(path: Path | str, decoder: str = "decord") -> Video:
    """Open ``path`` for index-based decoding; raises ``UnreadableSample`` with the reason."""
    path = Path(path)
    _check_file(path)
    decoder = resolve_decoder(decoder)
    if decoder not in ("decord", "pyav"):
        raise ValueError(f"data.decoder: '{decoder}' is not one of: decord, pyav")
    try:
        pyav = decoder == "pyav" or _is_gif(path) or path.suffix.lower() in TRANSPORT_STREAMS
        return PyAVVideo(path) if pyav else DecordVideo(path)
    except UnreadableSample as exc:
        raise kind_of(exc, NOT_VIDEO)


def kind_of(exc: UnreadableSample, kind: str) -> UnreadableSample:
    """``exc`` with ``kind`` unless it already says its kind."""
    exc.kind = exc.kind or kind
    return exc


def _short(exc: BaseException) -> str:
    """One line of an exception: decord's '[time] file.cc:line:' prefixes and PyAV's errno
    and file name removed."""
    strerror = getattr(exc, "strerror", None)  # av.error.FFmpegError is an OSError
    text = " ".join((strerror or str(exc)).split()) or type(exc).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+\.cc:\d+: ", "", text)
    return text[:200]


# ---------------------------------------------------------------- decord

_decord = None
_decord_missing: str | None = None  # why decord cannot be imported here, once known


def resolve_decoder(decoder: str) -> str:
    """The decoder that will run: ``decord`` where it imports, else ``pyav`` (said once per
    process; the datasets resolve it before their loader workers start)."""
    global _decord_missing
    if decoder != "decord" or _decord is not None:
        return decoder
    if _decord_missing is None:
        try:
            _import_decord()
            return decoder
        except (ImportError, OSError) as exc:  # not installed, or its bundled libraries fail
            _decord_missing = _short(exc)
            log.warning("data.decoder=decord: decord cannot be imported here (%s; it has wheels "
                        "only for Linux x86_64 and Windows x86_64); decoding with PyAV instead",
                        _decord_missing)
    return "pyav"


def _import_decord():
    global _decord
    if _decord is None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its bundled ffmpeg's chatter
        _decord = decord
    return _decord


class DecordVideo(Video):
    def __init__(self, path: Path):
        decord = _import_decord()
        self._path = path
        try:
            # one thread: parallelism comes from the data-loader workers
            self._reader = decord.VideoReader(str(path), num_threads=1)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as exc:  # noqa: BLE001 (decord raises RuntimeError and DECORDError)
            reason = _decord_reason(exc)
            # decord decodes a first frame while opening: PyAV finds that damage when reading
            damaged = reason.startswith(("truncated or corrupt", "corrupt data"))
            raise UnreadableSample(reason, DAMAGED if damaged else None) from exc

    def read(self, indices: list[int]) -> np.ndarray:
        try:
            batch = self._reader.get_batch(list(indices))
        except Exception as exc:  # noqa: BLE001
            if "from_size == to_size" in str(exc):
                # decord 0.6 cannot copy out frames of some sizes (48 x 64, and 64 x 48 rotated
                # upright): PyAV decodes them, the same frames
                with PyAVVideo(self._path) as video:
                    return video.read(indices)
            raise UnreadableSample(f"decode failed: {_decord_reason(exc)}", DAMAGED) from exc
        # another library (pytorchvideo) may have switched decord's bridge to torch
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def close(self) -> None:
        self._reader = None


def _decord_reason(exc: BaseException) -> str:
    text = _short(exc)
    if "cannot find video stream" in text:
        return "no video stream (audio only, or not a video)"
    if text.startswith("Error reading"):
        return "cannot open: not a video file, or a truncated or corrupt container"
    if "broken metadata" in text:
        return "not a video (no duration or frame count; an image renamed?)"
    if "avcodec_send_packet" in text:
        return "corrupt data: the decoder rejected a packet"
    if "av_read_frame failed" in text:
        return "truncated or corrupt: reading the packets failed"
    if "Cannot create buffer source" in text:
        return "truncated or corrupt: no decodable frame"
    return re.sub(r"^Check failed: .*?\) ", "", text)


# ---------------------------------------------------------------- PyAV

class PyAVVideo(Video):
    def __init__(self, path: Path):
        import av

        self._rewind = False  # True once the container is no longer at its start
        try:
            self._container = av.open(str(path))
        except Exception as exc:  # noqa: BLE001 (av.error.* and OSError)
            raise UnreadableSample(f"cannot open: {_short(exc)}") from exc
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
            self.num_frames = self._stream.frames or self._count_packets()
            if self.num_frames < 1:
                raise UnreadableSample("video stream holds no frames")
        except UnreadableSample:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise UnreadableSample(f"cannot read the stream: {_short(exc)}") from exc

    def _count_packets(self) -> int:
        """Frame count where the header has none (Matroska, WebM, GIF): demux, no decoding."""
        count = sum(1 for packet in self._container.demux(self._stream) if packet.size)
        self._rewind = True
        return count

    def read(self, indices: list[int]) -> np.ndarray:
        wanted = sorted(set(indices))
        try:
            found = self._seek_read(wanted) if wanted[0] >= SEEK_AFTER else None
            if found is None or len(found) < len(wanted):  # variable frame rate, or truncated
                found = self._linear_read(wanted)
        except UnreadableSample as exc:
            raise kind_of(exc, DAMAGED)
        except Exception as exc:  # noqa: BLE001
            raise UnreadableSample(f"decode failed (corrupt data?): {_short(exc)}",
                                   DAMAGED) from exc
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UnreadableSample(f"truncated: frame {missing[0]} of {self.num_frames} could "
                                   f"not be decoded ({len(found)} of {len(wanted)} found)",
                                   DAMAGED)
        return np.stack([found[i] for i in indices])

    def _rgb(self, frame) -> np.ndarray:
        """uint8 [H, W, 3] as decord gives it: a frame whose size changed mid-stream scaled to
        the stream's first size, then turned upright by the rotation metadata (phone videos)."""
        width, height = self._size
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
        turns = round(getattr(frame, "rotation", 0) / 90) % 4  # degrees counter-clockwise
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
