"""modalities/audio/fbank.py: Kaldi's log mel filterbank against kaldi-native-fbank (a test
dependency), the bins Kaldi refuses against a direct float64 computation, frame counts, and the
approximate inverse."""
from __future__ import annotations

import math

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from mim.modalities.audio.fbank import EPS, fbank, frame_sizes, mel_banks, to_wave

LOG_EPS = math.log(EPS)


def _knf_options(sample_rate: int, bins: int, frame_length_ms: float = 25.0) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.dither = 0.0
    frame.window_type = "hanning"
    frame.snip_edges = True
    frame.samp_freq = sample_rate
    frame.frame_length_ms = frame_length_ms
    frame.frame_shift_ms = 10.0
    frame.remove_dc_offset = True
    frame.preemph_coeff = 0.97
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    return opts


def _knf_fbank(wave: np.ndarray, sample_rate: int, bins: int,
               frame_length_ms: float = 25.0) -> np.ndarray:
    """kaldi-native-fbank's log mel energies of the float wave as given: [frames, bins]."""
    online = knf.OnlineFbank(_knf_options(sample_rate, bins, frame_length_ms))
    online.accept_waveform(sample_rate, wave.astype(np.float32).tolist())
    online.input_finished()
    rows = [online.get_frame(i) for i in range(online.num_frames_ready)]
    return np.stack(rows) if rows else np.zeros((0, bins), np.float32)


def _waves(sample_rate: int) -> dict[str, np.ndarray]:
    """White noise, a chirp, a tone plus noise; lengths not a multiple of the 10 ms shift."""
    rng = np.random.default_rng(sample_rate)
    noise = 0.5 * rng.uniform(-1, 1, int(1.2345 * sample_rate) + 7)
    n = int(0.9876 * sample_rate) + 3
    t = np.arange(n) / sample_rate
    top = sample_rate / 2 - 200.0  # 100 Hz up to 200 Hz below Nyquist, linearly
    chirp = 0.5 * np.sin(2 * np.pi * (100.0 * t + (top - 100.0) / (2 * t[-1]) * t * t))
    m = int(0.777 * sample_rate) + 11
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(m) / sample_rate)
    tone += 0.01 * rng.standard_normal(m)
    return {name: w.astype(np.float32) for name, w in
            {"noise": noise, "chirp": chirp, "tone+noise": tone}.items()}


def _ours(wave: np.ndarray, sample_rate: int, bins: int, **kwargs) -> np.ndarray:
    return fbank(torch.from_numpy(wave), sample_rate, bins, **kwargs).numpy()


# A pure chirp has, in each frame, one loud band and Hann-window leakage elsewhere that falls
# far below it. Both implementations compute in float32, whose FFT rounding (~1e-7 of the frame's
# loudest amplitude) decides the bands more than 16 nats (~70 dB) below the frame's loudest:
# there knf and this code each differ by up to ~1e-2 from a float64 computation, so those bands
# (and the eps-floored ones, which lie there too) are compared loosely, the rest to 1e-3.
DYNAMIC_RANGE = 16.0


@pytest.mark.parametrize("sample_rate,bins", [(16000, 80), (8000, 80), (44100, 80),
                                              (16000, 64), (8000, 64), (44100, 64)])
def test_matches_kaldi_native_fbank(sample_rate, bins):
    for name, wave in _waves(sample_rate).items():
        want, got = _knf_fbank(wave, sample_rate, bins), _ours(wave, sample_rate, bins)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        window, shift, _ = frame_sizes(sample_rate)
        assert want.shape[0] == 1 + (len(wave) - window) // shift and len(wave) % shift, name
        diff = np.abs(got - want)
        if name == "chirp":
            precise = want > want.max(axis=1, keepdims=True) - DYNAMIC_RANGE
            assert precise.sum() >= want.shape[0] * 3, name  # the chirp's bands in every frame
            assert diff[precise].max() < 1e-3, (name, diff[precise].max())
            assert diff.max() < 5e-2, (name, diff.max())
        else:
            assert diff.max() < 1e-3, (name, diff.max())


@pytest.mark.parametrize("sample_rate,bins,fft", [(16000, 80, 512), (8000, 64, 256),
                                                  (44100, 80, 2048), (16000, 128, 1024)])
def test_mel_banks_match_kaldi_native_fbank(sample_rate, bins, fft):
    frame = knf.FrameExtractionOptions()
    frame.samp_freq = sample_rate
    frame.frame_length_ms = 750.0 * fft / sample_rate  # 0.75 fft samples: padded to fft
    frame.window_type = "hanning"
    opts = knf.MelBanksOptions()
    opts.num_bins, opts.low_freq, opts.high_freq = bins, 20.0, 0.0
    banks = knf.MelBanks(opts, frame)
    eye = np.eye(fft // 2 + 1, dtype=np.float32)
    want = np.stack([banks.compute(row) for row in eye], axis=1)  # [bins, fft/2 + 1]
    got = mel_banks(sample_rate, bins, fft).numpy()
    assert got.shape == want.shape == (bins, fft // 2 + 1)
    assert np.array_equal(got > 0, want > 0) and not got[:, -1].any()  # Nyquist: in no bank
    assert np.abs(got - want).max() < 1e-4  # knf computes the mel scale in float32


def test_128_bins_at_16k_with_a_longer_window_match_kaldi_native_fbank():
    """50 ms frames (a 1024-point FFT) put an FFT bin in every one of 128 banks: knf takes it."""
    wave = _waves(16000)["noise"]
    want = _knf_fbank(wave, 16000, 128, frame_length_ms=50.0)
    got = _ours(wave, 16000, 128, frame_length_ms=50.0)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3


def _direct_log_mel(wave: np.ndarray, sample_rate: int, banks: np.ndarray) -> np.ndarray:
    """Kaldi's recipe written out frame by frame in float64: [frames, bins]."""
    window, shift, fft = frame_sizes(sample_rate)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / (window - 1))
    rows = []
    for start in range(0, len(wave) - window + 1, shift):
        x = wave[start:start + window].astype(np.float64)
        x = x - x.mean()
        y = np.concatenate([[x[0] - 0.97 * x[0]], x[1:] - 0.97 * x[:-1]]) * hann
        power = np.abs(np.fft.rfft(y, n=fft)) ** 2
        rows.append(np.log(np.maximum(banks @ power, EPS)))
    return np.stack(rows)


def test_128_bins_at_16k_which_kaldi_refuses():
    with pytest.raises(Exception, match="num_mel_bins too large"):
        knf.OnlineFbank(_knf_options(16000, 128))
    banks = mel_banks(16000, 128, 512)  # [128, 257]
    empty = banks.sum(dim=1) == 0  # the lowest banks fall between two FFT bins
    assert 0 < empty.sum() < 20 and not empty[64:].any()
    for name, wave in _waves(16000).items():
        got = _ours(wave, 16000, 128)
        window, shift, _ = frame_sizes(16000)
        assert got.shape == (1 + (len(wave) - window) // shift, 128) and np.isfinite(got).all()
        assert (got[:, empty.numpy()] == np.float32(LOG_EPS)).all(), name
        if name != "chirp":  # the chirp's quiet bands: float32 rounding (see DYNAMIC_RANGE)
            want = _direct_log_mel(wave, 16000, banks.double().numpy())
            assert np.abs(got - want).max() < 1e-3, name


def test_matches_torchaudio_where_it_imports():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wave = torch.from_numpy(_waves(16000)["noise"])
    want = kaldi.fbank(wave[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                       window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    assert (fbank(wave, 16000, 128) - want).abs().max() < 1e-3


def test_frame_counts():
    assert fbank(torch.zeros(163840), 16000).shape == (1022, 128)  # 10.24 s: 1 + 163440 // 160
    assert fbank(torch.zeros(164080), 16000).shape == (1024, 128)  # 1024 frames: 10.255 s
    short = fbank(torch.zeros(320), 16000)  # 0.02 s, shorter than one 25 ms window
    assert short.shape == (0, 128) and short.dtype == torch.float32
    assert fbank(torch.zeros(400), 16000).shape == (1, 128)
    assert fbank(torch.zeros(2, 3, 320), 16000, 80).shape == (2, 3, 0, 80)
    assert _knf_fbank(np.zeros(320, np.float32), 16000, 80).shape == (0, 80)


def test_leading_dims_and_silence():
    waves = torch.from_numpy(np.stack([_waves(16000)["noise"][:8000]] * 3)) * torch.tensor(
        [[1.0], [0.5], [0.0]])  # [3, 8000]
    got = fbank(waves.reshape(3, 1, 8000), 16000, 80)  # [3, 1, frames, 80]
    assert got.shape == (3, 1, 48, 80)  # 1 + (8000 - 400) // 160
    for i in range(3):
        assert torch.equal(got[i, 0], fbank(waves[i], 16000, 80))
    assert (got[2] == np.float32(LOG_EPS)).all()  # silence: every energy at the floor
    # half the amplitude: a quarter of the power, -ln 4 in every band
    assert (got[0] - got[1] - math.log(4)).abs().max() < 1e-4


def _tone(freq: float, seconds: float = 1.0, sample_rate: int = 16000) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(int(seconds * sample_rate))
                           / sample_rate)


@pytest.mark.parametrize("freq", [440.0, 1234.0, 2500.0])
def test_to_wave_keeps_a_tone(freq):
    log_mel = fbank(_tone(freq), 16000)  # [98, 128]
    wave = to_wave(log_mel, 16000)
    assert wave.dtype == torch.float32 and wave.shape == (400 + 160 * 97,)
    assert torch.isfinite(wave).all() and 0 < wave.abs().max() <= 0.9 + 1e-6
    spectrum = torch.fft.rfft(wave).abs()
    peak = spectrum.argmax().item() * 16000 / wave.numel()
    assert abs(peak - freq) <= 16000 / 512  # within one bin of fbank's 512-point FFT
    again = fbank(wave, 16000)
    assert again.shape == log_mel.shape
    loud = log_mel > log_mel.max() - 10.0  # within 10 nats (~43 dB) of the loudest band
    pair = torch.stack([log_mel[loud], again[loud]])
    assert torch.corrcoef(pair)[0, 1] > 0.9


def test_to_wave_is_deterministic_and_handles_no_frames():
    log_mel = fbank(_tone(1000.0, 0.3), 16000, 80)
    assert torch.equal(to_wave(log_mel, 16000, iterations=8),
                       to_wave(log_mel, 16000, iterations=8))
    assert not torch.equal(to_wave(log_mel, 16000, iterations=8),
                           to_wave(log_mel, 16000, iterations=8, seed=1))
    assert to_wave(torch.zeros(0, 80), 16000).shape == (0,)
