"""Reading sound: windows read alone (a 3-hour file costs a clip), PyAV's seek landing on the
right samples, anti-aliased resampling, channels, and each bad file's kind."""
from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mim.data import UnreadableSample
from mim.modalities.audio.decode import (DAMAGED, EMPTY, FEW_CHANNELS, NO_STREAM, NOT_AUDIO,
                                         NOT_FINITE, TOO_SHORT, clip_window, probe, read_clip,
                                         resample)


def peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def sine(seconds: float, freq: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(
        np.float32)


def test_a_three_hour_wav_is_never_read_whole(tmp_path: Path) -> None:
    """A 3 h mono 16-bit WAV (345 MB of zeros, a sparse file) with a tone at 2 h: a 10 s
    window there comes back alone, in a few MB."""
    rate, hours = 16000, 3
    samples = hours * 3600 * rate
    path = tmp_path / "long.wav"
    header = (b"RIFF" + struct.pack("<I", 36 + 2 * samples) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
              + b"data" + struct.pack("<I", 2 * samples))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * samples)
        f.seek(len(header) + 2 * 7200 * rate)
        f.write((sine(10.0, 1000.0, rate) * 32767).astype("<i2").tobytes())
    info = probe(path)
    assert (info.frames, info.sample_rate, info.backend) == (samples, rate, "soundfile")
    tracemalloc.start()
    wave = read_clip(path, info, 7200 * rate, 10 * rate, rate)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wave.shape == (1, 160000) and peak < 20e6, peak
    assert abs(peak_hz(wave[0].numpy(), rate) - 1000.0) < 2


def test_pyav_seeks_to_the_window(tmp_path: Path) -> None:
    """An AAC file of 20 s, 300 Hz then 1200 Hz after 12 s: a window at 14 s holds 1200 Hz."""
    rate = 48000
    wave = np.concatenate([sine(12.0, 300.0, rate), sine(8.0, 1200.0, rate)])
    path = tmp_path / "two.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    info = probe(path)
    assert info.backend == "pyav" and abs(info.frames - 20 * rate) < rate // 10
    late = read_clip(path, info, 14 * rate, 2 * rate, 16000)
    early = read_clip(path, info, 2 * rate, 2 * rate, 16000)
    assert abs(late.shape[1] - 32000) <= 2
    assert abs(peak_hz(late[0].numpy(), 16000) - 1200) < 10
    assert abs(peak_hz(early[0].numpy(), 16000) - 300) < 10


def test_resampling_keeps_the_band_and_removes_what_would_alias() -> None:
    for rate in (8000, 44100, 48000):
        out = resample(sine(1.0, 700.0, rate)[None], rate, 16000)
        assert abs(out.shape[1] - 16000) <= 1 and abs(peak_hz(out[0], 16000) - 700) < 3
    kept = resample(sine(1.0, 7000.0, 48000)[None], 48000, 16000)
    assert abs(peak_hz(kept[0], 16000) - 7000) < 3
    above = sine(1.0, 12000.0, 48000)  # above 16 kHz's Nyquist: must not fold to 4 kHz
    gone = resample(above[None], 48000, 16000)
    assert (gone ** 2).mean() < 0.01 * (above ** 2).mean()


def test_channels_mixed_down_or_kept(tmp_path: Path) -> None:
    rate = 192000
    eight = np.stack([sine(0.5, 500.0, rate) * (c + 1) / 8 for c in range(8)], 1)
    path = tmp_path / "eight.wav"
    sf.write(str(path), eight, rate, subtype="FLOAT")
    info = probe(path)
    mono = read_clip(path, info, 0, info.frames, 16000)
    assert mono.shape == (1, 8000)
    direct = resample(eight.T.mean(0, keepdims=True).astype(np.float32), rate, 16000)
    np.testing.assert_allclose(mono.numpy(), direct, atol=1e-5)
    assert read_clip(path, info, 0, info.frames, 16000, channels=2).shape == (2, 8000)
    with pytest.raises(UnreadableSample) as caught:
        read_clip(path, info, 0, info.frames, 16000, channels=9)
    assert caught.value.kind == FEW_CHANNELS


def test_clip_windows() -> None:
    assert clip_window(1000, 100, 2.0, 0.5) == (400, 200, False)
    assert clip_window(1000, 100, 2.0, 0.0) == (0, 200, False)
    assert clip_window(1000, 100, 2.0, 0.9999) == (800, 200, False)
    assert clip_window(150, 100, 2.0, 0.7) == (0, 150, True)


def _video_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def test_each_bad_file_has_its_kind(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(str(good), sine(2.0, 440.0, 16000), 16000, subtype="PCM_16")
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "text.wav").write_text("not a sound\n" * 50)
    (tmp_path / "empty.ogg").write_bytes(b"")
    sf.write(str(tmp_path / "one.wav"), np.zeros(1, np.float32), 16000)
    nan = sine(1.0, 440.0, 16000)
    nan[::1000] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 16000, subtype="FLOAT")
    _video_only(tmp_path / "video.mp4")
    flac = tmp_path / "cut.flac"
    sf.write(str(flac), np.random.default_rng(0).uniform(-0.5, 0.5, 64000), 16000)
    flac.write_bytes(flac.read_bytes()[:len(flac.read_bytes()) // 2])
    kinds = {"truncated.wav": DAMAGED, "text.wav": NOT_AUDIO, "empty.ogg": EMPTY,
             "one.wav": TOO_SHORT, "nan.wav": NOT_FINITE, "video.mp4": NO_STREAM,
             "cut.flac": DAMAGED}
    for name, kind in kinds.items():
        with pytest.raises(UnreadableSample) as caught:
            path = tmp_path / name
            info = probe(path)
            read_clip(path, info, 0, info.frames, 16000)
        assert caught.value.kind == kind, (name, str(caught.value))
        assert "\n" not in str(caught.value)
