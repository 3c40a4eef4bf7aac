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
upright (rotation metadata applied), at the stream's first size, or smaller where the clip's
crops allow (``Video.read``'s ``resolution``: decord's ``width``/``height``, PyAV's RGB
conversion), each decoder with ``decoder_threads()`` threads. Every failure becomes
``UnreadableSample`` with a short reason and a kind, the same for both decoders: ``EMPTY``,
``NOT_VIDEO`` (cannot be opened), ``DAMAGED`` (frames fail to decode).

torchcodec is not a ``data.decoder``: its PyPI wheel for torch 2.13 links CUDA torch and a
system FFmpeg (the README's "Video" section says which).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from torch.utils.dlpack import from_dlpack

from mim.data import UnreadableSample
from mim.modalities.video.pyav_video import SEEK_AFTER, PyAVVideo
from mim.modalities.video.source import (DAMAGED, EMPTY, MISSING, NOT_VIDEO, PAST_END,
                                         Resolution, Video, check_file, decoder_threads,
                                         kind_of, reduced, short)

__all__ = ["DAMAGED", "EMPTY", "MISSING", "NOT_VIDEO", "PAST_END", "SEEK_AFTER", "DecordVideo",
           "PyAVVideo", "Video", "open_video", "resolve_decoder"]

# transport streams (cut live captures) may change size midway: decord's frames after the
# change depend on where it began decoding (18 to 31 levels off a resize here), PyAV's do not
TRANSPORT_STREAMS = frozenset({".ts", ".mts", ".m2ts"})

log = logging.getLogger("mim.data")


def _is_gif(path: Path) -> bool:
    if path.suffix.lower() == ".gif":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"GIF8"


def open_video(path: Path | str, decoder: str = "decord") -> Video:
    """Open ``path`` for index-based decoding; raises ``UnreadableSample`` with the reason."""
    path = Path(path)
    check_file(path)
    decoder = resolve_decoder(decoder)
    if decoder not in ("decord", "pyav"):
        raise ValueError(f"data.decoder: '{decoder}' is not one of: decord, pyav")
    try:
        pyav = decoder == "pyav" or _is_gif(path) or path.suffix.lower() in TRANSPORT_STREAMS
        return PyAVVideo(path) if pyav else DecordVideo(path)
    except UnreadableSample as exc:
        raise kind_of(exc, NOT_VIDEO)


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
            _decord_missing = short(exc)
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
        self._path, self._threads = path, decoder_threads()
        try:
            self._reader = decord.VideoReader(str(path), num_threads=self._threads)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as exc:  # noqa: BLE001 (decord raises RuntimeError and DECORDError)
            reason = _decord_reason(exc)
            # decord decodes a first frame while opening: PyAV finds that damage when reading
            damaged = reason.startswith(("truncated or corrupt", "corrupt data"))
            raise UnreadableSample(reason, DAMAGED if damaged else None) from exc

    def read(self, indices: list[int], resolution: Resolution = None) -> np.ndarray:
        sized = self._sized(resolution) if resolution is not None else None
        if sized is not None:
            reader, (width, height) = sized
            frames = self._get(reader, indices, resolution)
            if frames.shape[1:3] == (height, width):
                return frames
        frames = self._get(self._reader, indices, resolution)
        self.frame_size = frames.shape[1:3]
        return frames

    def _get(self, reader, indices: list[int], resolution: Resolution) -> np.ndarray:
        try:
            batch = reader.get_batch(list(indices))
        except Exception as exc:  # noqa: BLE001
            if "from_size == to_size" in str(exc):
                # decord 0.6 cannot copy out frames of some sizes (48 x 64, and 64 x 48 rotated
                # upright): PyAV decodes them, the same frames
                with PyAVVideo(self._path) as video:
                    frames = video.read(indices, resolution)
                    self.frame_size = video.frame_size
                    return frames
            raise UnreadableSample(f"decode failed: {_decord_reason(exc)}", DAMAGED) from exc
        if not hasattr(batch, "to_dlpack"):  # another library (pytorchvideo) set decord's
            return np.ascontiguousarray(batch, dtype=np.uint8)  # bridge to torch
        return from_dlpack(batch.to_dlpack()).numpy()  # decord's buffer, not a copy of it

    def _sized(self, resolution: Resolution):
        """(a reader of frames at ``resolution``'s size, that (width, height)), or None when the
        clip needs the full size. decord's reader takes the size when it opens and tells no
        size or rotation before decoding, so PyAV reads them (the header: a millisecond; the
        first frame's rotation only when the frames will be reduced)."""
        try:
            import av

            with av.open(str(self._path)) as container:
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                scale = resolution(height, width)  # the crop's side is the same either way up
                if scale >= 1:
                    return None
                if round(next(container.decode(stream)).rotation / 90) % 2:
                    width, height = height, width  # upright; decord rotates, then scales
        except Exception:  # noqa: BLE001 (decord opened it: decode at full size)
            return None
        self.frame_size = (height, width)
        width, height = reduced(width, height, scale)
        try:
            reader = _import_decord().VideoReader(str(self._path), width=width, height=height,
                                                  num_threads=self._threads)
        except Exception:  # noqa: BLE001
            return None
        return reader, (width, height)

    def close(self) -> None:
        self._reader = None


def _decord_reason(exc: BaseException) -> str:
    text = short(exc)
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


