"""A waveform -> Kaldi's log mel filterbank (AudioMAE's input), and an approximate way back.

``fbank`` is Kaldi's ``compute-fbank-feats`` as AudioMAE (Huang et al. 2022, arXiv 2207.06405)
calls it through ``torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True,
sample_frequency=sr, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
frame_shift=10)``, written here in torch from Kaldi's definition (feature-window.cc,
mel-computations.cc), step by step:

1. frames of ``frame_length_ms`` every ``frame_shift_ms`` (both truncated to whole samples), with
   Kaldi's ``snip_edges=True``: ``1 + (N - window) // shift`` frames, each wholly inside the wave;
   a wave shorter than one window has no frames and gives an empty ``[0, bins]`` tensor;
2. each frame less its own mean (``remove_dc_offset``);
3. pre-emphasis within the frame: ``x[i] -= 0.97 x[i-1]`` for i > 0, and ``x[0] -= 0.97 x[0]``
   (which the window's zero at n = 0 then removes anyway);
4. Kaldi's ``hanning`` window, ``0.5 - 0.5 cos(2 pi n / (N - 1))`` (symmetric: zero at both ends);
5. zero-padded at the end to the next power of two, real FFT, power spectrum;
6. Kaldi's triangular mel banks, triangles equally spaced on ``mel = 1127 ln(1 + f / 700)``
   between ``low_freq`` and ``high_freq`` (``high_freq <= 0``: the Nyquist frequency plus it);
   the Nyquist FFT bin is in no bank, as in Kaldi;
7. the natural log, each energy floored first at ``torch.finfo(torch.float32).eps``.

No dither, no energy coefficient. The wave is read as given (soundfile's floats in [-1, 1]);
Kaldi's tools scale int16 samples instead, which adds ``2 ln(32768)`` to every energy that is
above the floor. Everything runs in float32, on the wave's device, over any leading dims.

Kaldi refuses a bank that holds no FFT bin (``--num-mel-bins too large``), which 128 bins at
16 kHz with a 512-point FFT have at the low end; here such a bank's energy is 0, floored: its
log is ``log(eps)`` in every frame (torchaudio computes the same).

``to_wave`` goes back, approximately, for listening to reconstructions (see its docstring).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal
import torch

EPS = torch.finfo(torch.float32).eps  # Kaldi's log floor: std::numeric_limits<float>::epsilon()


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Hz -> Kaldi's (HTK's) mel: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def frame_sizes(sample_rate: int, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0) -> tuple[int, int, int]:
    """(window, shift, fft size) in samples, truncated as Kaldi does; fft: the next power of 2."""
    window = int(sample_rate * 0.001 * frame_length_ms)
    shift = int(sample_rate * 0.001 * frame_shift_ms)
    if window < 2 or shift < 1:
        raise ValueError(f"a {frame_length_ms} ms window every {frame_shift_ms} ms at "
                         f"{sample_rate} Hz is {window} samples every {shift}: too short")
    return window, shift, 1 << (window - 1).bit_length()


def _band_edges(sample_rate: int, low_freq: float, high_freq: float) -> tuple[float, float]:
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"mel banks need 0 <= low_freq < high_freq <= {nyquist} (Nyquist); got "
                         f"low_freq={low_freq}, high_freq={high_freq} (-> {high})")
    return low_freq, high


@functools.lru_cache(maxsize=64)
def _mel_banks(sample_rate: int, num_mel_bins: int, fft_size: int, low_freq: float,
               high_freq: float, device: torch.device) -> torch.Tensor:
    low, high = _band_edges(sample_rate, low_freq, high_freq)
    mel_low, mel_high = mel_scale(low), mel_scale(high)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(num_mel_bins + 2, dtype=torch.float64)  # [bins + 2]
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [bins, 1] each
    fft_bins = torch.arange(fft_size // 2 + 1, dtype=torch.float64)  # [fft/2 + 1]
    mel = mel_scale(fft_bins * (sample_rate / fft_size))[None, :]  # [1, fft/2 + 1]
    up, down = (mel - left) / (center - left), (right - mel) / (right - center)
    banks = torch.where((mel > left) & (mel < right), torch.minimum(up, down), 0.0)
    banks[:, -1] = 0.0  # Kaldi's banks span fft/2 bins: the Nyquist bin is in none
    return banks.to(torch.float32).to(device)  # [bins, fft/2 + 1]


def mel_banks(sample_rate: int, num_mel_bins: int = 128, fft_size: int = 512,
              low_freq: float = 20.0, high_freq: float = 0.0,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """Kaldi's triangular mel banks: float32 ``[num_mel_bins, fft_size // 2 + 1]``.

    Row b rises from 0 at mel edge b to 1 at edge b + 1 and falls to 0 at edge b + 2, the
    ``num_mel_bins + 2`` edges equally spaced in mel from ``low_freq`` to ``high_freq``
    (``<= 0``: Nyquist plus it), sampled at the FFT bins' frequencies. Cached: do not modify it.
    """
    return _mel_banks(int(sample_rate), int(num_mel_bins), int(fft_size), float(low_freq),
                      float(high_freq), torch.device(device))


@functools.lru_cache(maxsize=16)
def _hann(window: int, device: torch.device) -> torch.Tensor:
    n = torch.arange(window, dtype=torch.float64)  # [window]
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (window - 1))).to(torch.float32).to(device)


def hann_window(window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Kaldi's 'hanning' window, symmetric: float32 ``[window]``. Cached: do not modify it."""
    return _hann(int(window), torch.device(device))


def _frames(wave: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """[..., samples] -> [..., frames, window], snip_edges=True (at least one frame)."""
    return wave.unfold(-1, window, shift)  # [..., frames, window]


def _preemphasize(frames: torch.Tensor, coeff: float) -> torch.Tensor:
    """Kaldi's pre-emphasis within each frame; the first sample is scaled by 1 - coeff."""
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # [..., frames, window]
    return frames - coeff * previous


def power_spectrum(wave: torch.Tensor, sample_rate: int, frame_length_ms: float = 25.0,
                   frame_shift_ms: float = 10.0, preemphasis: float = 0.97) -> torch.Tensor:
    """Steps 1-5 of ``fbank``: float32 ``[..., frames, fft // 2 + 1]`` (frames may be 0)."""
    window, shift, fft_size = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    wave = wave.to(torch.float32)
    if wave.shape[-1] < window:
        return wave.new_zeros(*wave.shape[:-1], 0, fft_size // 2 + 1)  # [..., 0, fft/2 + 1]
    frames = _frames(wave, window, shift)  # [..., frames, window]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    frames = _preemphasize(frames, preemphasis) * hann_window(window, wave.device)
    spectrum = torch.fft.rfft(frames, n=fft_size)  # [..., frames, fft/2 + 1]
    return spectrum.real.square() + spectrum.imag.square()


def fbank(wave: torch.Tensor, sample_rate: int, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, low_freq: float = 20.0,
          high_freq: float = 0.0, preemphasis: float = 0.97) -> torch.Tensor:
    """Kaldi's log mel filterbank of ``wave`` ``[..., samples]``: float32 ``[..., frames, bins]``.

    ``frames = 1 + (samples - window) // shift``, and 0 (an empty tensor) when the wave is shorter
    than one window. See the module's docstring for each step.
    """
    power = power_spectrum(wave, sample_rate, frame_length_ms, frame_shift_ms, preemphasis)
    banks = mel_banks(sample_rate, num_mel_bins, 2 * (power.shape[-1] - 1), low_freq,
                      high_freq, power.device)  # [bins, fft/2 + 1]
    return (power @ banks.T).clamp_min(EPS).log()  # [..., frames, bins]


# ---- the way back -----------------------------------------------------------------------------


def _mel_to_power(mel_power: torch.Tensor, banks: torch.Tensor, steps: int) -> torch.Tensor:
    """[frames, bins] mel energies -> [frames, fft/2 + 1] power: non-negative least squares,
    the pseudo-inverse's answer clamped at 0, then projected-gradient steps of 1 / L."""
    power = (mel_power @ torch.linalg.pinv(banks).T).clamp_min(0)  # [frames, fft/2 + 1]
    lipschitz = torch.linalg.matrix_norm(banks, ord=2).square().clamp_min(EPS)
    for _ in range(steps):
        gradient = (power @ banks.T - mel_power) @ banks  # [frames, fft/2 + 1]
        power = (power - gradient / lipschitz).clamp_min(0)
    return power


def _stft(wave: torch.Tensor, window: torch.Tensor, shift: int, fft_size: int) -> torch.Tensor:
    """[samples] -> [frames, fft/2 + 1] complex, framed exactly as ``fbank`` frames."""
    return torch.fft.rfft(_frames(wave, window.numel(), shift) * window, n=fft_size)


def _istft(spectrum: torch.Tensor, window: torch.Tensor, shift: int) -> torch.Tensor:
    """[frames, fft/2 + 1] complex -> [samples]: windowed overlap-add over the window's
    summed square (least squares), floored at 1e-3 of its peak where the frames thin out."""
    size, count = window.numel(), spectrum.shape[0]
    frames = torch.fft.irfft(spectrum, dim=-1)[:, :size] * window  # [frames, window]
    length = size + shift * (count - 1)

    def overlap_add(columns: torch.Tensor) -> torch.Tensor:  # [window, frames] -> [samples]
        folded = torch.nn.functional.fold(columns[None], (1, length), (1, size),
                                          stride=(1, shift))  # [1, 1, 1, samples]
        return folded.reshape(length)  # [samples]

    weights = window.square()[:, None].expand(size, count)  # [window, frames]
    envelope = overlap_add(weights)  # [samples]
    return overlap_add(frames.T) / envelope.clamp_min(1e-3 * envelope.max())


def _griffin_lim(magnitude: torch.Tensor, window: torch.Tensor, shift: int, fft_size: int,
                 iterations: int, momentum: float, seed: int) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin, Balazs, Sondergaard 2013): [frames, fft/2 + 1] -> [samples].

    c_n = stft(istft(magnitude * phase(t_{n-1}))), t_n = c_n + momentum (c_n - c_{n-1}); the phase
    starts uniform at random from a CPU generator seeded with ``seed`` (the same on any device).
    """
    generator = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(magnitude.shape, generator=generator)  # [frames, fft/2 + 1]
    t = torch.polar(torch.ones_like(angle), angle).to(magnitude.device)
    previous = None
    for _ in range(iterations):
        wave = _istft(magnitude * t / t.abs().clamp_min(1e-16), window, shift)
        c = _stft(wave, window, shift, fft_size)  # [frames, fft/2 + 1]
        t = c if previous is None else c + momentum * (c - previous)
        previous = c
    return _istft(magnitude * t / t.abs().clamp_min(1e-16), window, shift)


def _deemphasize(wave: torch.Tensor, coeff: float) -> torch.Tensor:
    """y[n] = x[n] + coeff y[n-1], the IIR inverse of a whole-wave pre-emphasis."""
    if coeff == 0:
        return wave
    filtered = scipy.signal.lfilter([1.0], [1.0, -coeff], wave.double().cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(filtered)).to(wave)


def to_wave(log_mel: torch.Tensor, sample_rate: int, iterations: int = 32,
            frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, low_freq: float = 20.0,
            high_freq: float = 0.0, preemphasis: float = 0.97, momentum: float = 0.99,
            nnls_steps: int = 8, seed: int = 0) -> torch.Tensor:
    """An approximate inverse of ``fbank``, for listening: ``[frames, bins]`` -> float32
    ``[window + shift * (frames - 1)]`` samples (``fbank`` of it has ``frames`` frames again).

    exp of the log energies; back to a linear power spectrum through the mel banks
    (non-negative least squares: the pseudo-inverse clamped at 0, then ``nnls_steps``
    projected-gradient steps); magnitude = sqrt(power); phase by ``iterations`` of fast
    Griffin-Lim (momentum ``momentum``) over frames laid out as ``fbank``'s, with the same
    Hann window, shift and FFT size (rfft / irfft and a least-squares overlap-add rather than
    torch.stft / istft: istft refuses a symmetric Hann window with ``center=False``, whose
    first sample has no overlap, and ``center=True`` would shift the frames by half a window
    and reflect the edges); the pre-emphasis undone on the whole wave by the IIR
    de-emphasis filter; peak-normalised to 0.9 when louder. Reproducible: the initial phase
    comes from a generator seeded with ``seed``.

    Not undone, or only approximately: the phase (estimated); the detail within each mel band
    (each band's energy is spread smoothly over its FFT bins); the frequencies no bank covers
    (below ``low_freq``, above ``high_freq``, the Nyquist bin: silent); each frame's DC offset
    (lost); the pre-emphasis, applied per frame by ``fbank`` but undone over the whole wave; the
    loudness, when the peak normalisation scales it down.
    """
    if log_mel.shape[0] == 0:
        return log_mel.new_zeros(0, dtype=torch.float32)
    window_size, shift, fft_size = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    banks = mel_banks(sample_rate, log_mel.shape[-1], fft_size, low_freq, high_freq,
                      log_mel.device)  # [bins, fft/2 + 1]
    power = _mel_to_power(log_mel.to(torch.float32).exp(), banks, nnls_steps)
    window = hann_window(window_size, log_mel.device)
    wave = _griffin_lim(power.sqrt(), window, shift, fft_size, iterations, momentum, seed)
    wave = _deemphasize(wave, preemphasis)
    peak = wave.abs().max()
    return wave * (0.9 / peak) if peak > 0.9 else wave
