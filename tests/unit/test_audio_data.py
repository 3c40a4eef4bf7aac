"""The audio modality's data: clips of the right shape from real files, padding counted, the
list file's windows, channels, normalisation (AudioSet's and auto), SpecAugment, the demo set
and the pictures."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mim.data import UnreadableSample
from mim.models.factory import ModelConfig, token_grids
from mim.modalities.audio import SPEC, demo
from mim.modalities.audio.config import AudioDataConfig, clip_samples
from mim.modalities.audio.dataset import SHORT, AudioDataset, build_dataset, resolve_data
from mim.modalities.audio.fbank import fbank
from mim.modalities.audio.labelled import AudioEvalDataConfig, SpecAugmented, labelled
from mim.modalities.audio.pictures import render
from mim.registry import MODELS
from mim.spec import Panels


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], 1) if channels > 1 else wave


def write(path: Path, wave: np.ndarray, rate: int = 16000) -> Path:
    sf.write(str(path), wave, rate)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "long.wav", tone(12.0))
    write(tmp_path / "short.flac", tone(0.3, freq=880.0))
    return tmp_path


def config(root: Path, **fields) -> AudioDataConfig:
    return AudioDataConfig(root=str(root), **fields)


def test_the_default_preset_sees_a_64_by_8_grid() -> None:
    cfg = AudioDataConfig()
    shape = SPEC.sample_shape(cfg)
    assert shape == (1, 1024, 128) and cfg.clip_samples == 164080 and cfg.seconds == 10.255
    model = MODELS.get(SPEC.default_model)()
    grid, _ = token_grids(model, shape)
    assert tuple(grid) == (64, 8)
    assert SPEC.mask_defaults == {"ratio": 0.8}


def test_clip_length_gives_the_frames_asked_for() -> None:
    for frames, rate in ((1024, 16000), (256, 16000), (100, 22050), (7, 44100)):
        wave = torch.zeros(clip_samples(frames, rate)).uniform_(-0.5, 0.5)
        assert fbank(wave, rate, 128).shape == (frames, 128)
        assert fbank(wave[:-1], rate, 128).shape[0] == frames - 1
    assert AudioDataConfig(duration=5.12).num_frames == 512


def test_a_long_file_gives_clips_at_seeded_offsets(folder: Path) -> None:
    ds = build_dataset(config(folder, num_frames=256))
    assert [p.name for p in (i.path for i in ds.items)] == ["long.wav", "short.flac"]
    x, label, how = ds.load_padded(0, seed=3)
    assert x.shape == (1, 256, 128) and label == -1 and how is None
    assert torch.equal(x, ds.load(0, 3)[0])  # a pure function of the seed
    # the same 440 Hz tone everywhere: its strongest mel bin is the same in every clip
    peaks = {int(ds.load(0, s)[0][0].mean(0).argmax()) for s in range(4)}
    assert len(peaks) == 1


def test_a_short_clip_is_padded_and_counted(folder: Path) -> None:
    ds = build_dataset(config(folder, num_frames=256))
    x, _, how = ds.load_padded(1, seed=0)
    assert x.shape == (1, 256, 128)
    assert how == "0.30 s of a 2.58 s clip, padded with silence"
    sample = ds[(1, 0)]  # through the core's __getitem__: reported beside the sample
    assert sample.padded == [(str(folder / "short.flac"), how)]
    # the padding is silence: the frames after 0.3 s sit at the filterbank's floor
    floor = (float(torch.log(torch.tensor(torch.finfo(torch.float32).eps))) + 4.2677393) / (
        2 * 4.5689974)
    assert torch.allclose(x[0, 40:], torch.full_like(x[0, 40:], floor), atol=1e-4)
    skip = build_dataset(config(folder, num_frames=256, pad_short=False))
    with pytest.raises(UnreadableSample, match=r"0.30 s, shorter than a 2.58 s clip") as info:
        skip.load(1, 0)
    assert info.value.kind == SHORT


def test_list_file_windows_and_labels(tmp_path: Path) -> None:
    write(tmp_path / "a.wav", np.concatenate([tone(2.0, freq=300), tone(2.0, freq=3000)]))
    (tmp_path / "list.txt").write_text("a.wav low 0 1.9\na.wav high 2.1 4\n")
    ds = build_dataset(AudioDataConfig(list_file=str(tmp_path / "list.txt"), num_frames=150))
    assert ds.classes == ["high", "low"] and ds.labels == [1, 0]
    low, high = (ds.load(i, 0)[0][0].mean(0).argmax() for i in (0, 1))
    assert low < high  # each window holds its own tone only
    (tmp_path / "past.txt").write_text("a.wav 9 12\n")
    past = build_dataset(AudioDataConfig(list_file=str(tmp_path / "past.txt"), num_frames=150))
    with pytest.raises(UnreadableSample, match="past the end"):
        past.load(0, 0)


def test_channels_are_mixed_down_or_kept(tmp_path: Path) -> None:
    write(tmp_path / "stereo.wav", tone(3.0, channels=2))
    mono = build_dataset(config(tmp_path, num_frames=100)).load(0, 0)[0]
    both = build_dataset(config(tmp_path, num_frames=100, channels=2)).load(0, 0)[0]
    assert mono.shape == (1, 100, 128) and both.shape == (2, 100, 128)
    assert both[1].mean() < both[0].mean()  # the second channel is the quieter one
    with pytest.raises(UnreadableSample):
        build_dataset(config(tmp_path, num_frames=100, channels=3)).load(0, 0)


def test_gain_and_silence(tmp_path: Path) -> None:
    write(tmp_path / "a.wav", tone(3.0))
    plain = build_dataset(config(tmp_path, num_frames=100)).load(0, 5)[0]
    gained = build_dataset(config(tmp_path, num_frames=100, gain_db=6.0)).load(0, 5)[0]
    shift = (gained - plain).mean() * 2 * 4.5689974  # log-energy shift = 2 ln(gain)
    assert 0.0 < abs(float(shift)) <= 2 * np.log(10 ** (6 / 20)) + 1e-3
    write(tmp_path / "b.wav", np.zeros(48000))
    silent = build_dataset(config(tmp_path, num_frames=100, skip_silent=True))
    assert silent.load(0, 0)[0].shape == (1, 100, 128)
    with pytest.raises(UnreadableSample, match="digital silence"):
        silent.load(1, 0)


def test_auto_statistics_are_the_data_s(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / f"{i}.wav", tone(3.0, freq=300.0 * (i + 1)) * 0.1 * (i + 1))
    cfg = resolve_data(config(tmp_path, num_frames=100, mean="auto", std="auto"))
    assert isinstance(cfg.mean, float) and isinstance(cfg.std, float)
    x = torch.stack([AudioDataset(build_dataset(cfg).items, cfg, position=0.5).load(i, 0)[0]
                     for i in range(3)])
    # over the data the normalised filterbanks have mean 0 and std 1/2 (AudioMAE's scaling)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 0.5) < 1e-3
    with pytest.raises(ValueError, match="data.mean: a number or auto"):
        AudioDataConfig(mean="loud")


def test_bad_settings_name_their_key() -> None:
    for fields, key in (({"sample_rate": 1000}, "data.sample_rate"),
                        ({"duration": -1.0}, "data.duration"), ({"std": 0}, "data.std"),
                        ({"gain_db": -3.0}, "data.gain_db"), ({"num_frames": 0}, "data.num_frames")):
        with pytest.raises(ValueError, match=key):
            AudioDataConfig(**fields)
    with pytest.raises(ValueError, match="data.freqm / data.timem"):
        AudioEvalDataConfig(num_frames=100, timem=200)
    # unset, SpecAugment's widths follow the clip: AudioMAE's 48 of 128 bins, 192 of 1024 frames
    short = AudioEvalDataConfig(num_frames=256, num_mel_bins=64)
    assert (short.freq_mask, short.time_mask) == (24, 48)


def test_specaugment_masks_one_band_of_each_axis(tmp_path: Path) -> None:
    write(tmp_path / "a.wav", tone(3.0))
    cfg = AudioEvalDataConfig(root=str(tmp_path), num_frames=100, freqm=20, timem=30)
    item = build_dataset(cfg).items
    plain = AudioDataset(item, cfg).load(0, 7)[0]
    masked = SpecAugmented(item, cfg, []).load(0, 7)[0]
    changed = masked != plain  # [1, frames, mel]
    rows, cols = changed[0].all(1), changed[0].all(0)  # whole frames, whole mel bins
    assert 0 < int(cols.sum()) <= 20 or 0 < int(rows.sum()) <= 30
    assert torch.all(masked[changed] == 0)
    assert int(rows.sum()) <= 30 and int(cols.sum()) <= 20


def test_demo_set_kinds_formats_and_splits(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MIM_CACHE_DIR", str(tmp_path))
    data = labelled(AudioEvalDataConfig(num_frames=128))
    assert data.classes == list(demo.KINDS)
    assert len(data.train) == demo.TRAIN_PER_KIND * 5 and len(data.val) == demo.VAL_PER_KIND * 5
    root = tmp_path / "demo_audio" / demo.VERSION
    suffixes = {p.suffix for p in root.rglob("clip_*")}
    assert suffixes == {".wav", ".flac", ".ogg"}
    infos = {sf.info(str(p)).samplerate for p in root.rglob("clip_00[0-2].*")}
    assert infos == {16000, 22050, 44100}
    x, label = data.val.load(0, 0)
    assert x.shape == (1, 128, 128) and 0 <= label < 5
    # the test view is deterministic; the training view draws its window from the seed
    assert torch.equal(data.val.load(3, 0)[0], data.val.load(3, 1)[0])
    assert not torch.equal(data.train.load(3, 0)[0], data.train.load(3, 1)[0])


def test_pictures_show_four_rows_per_sample(tmp_path: Path) -> None:
    x = torch.randn(2, 1, 64, 32)
    masked = x.clone()
    masked[:, :, :16] = 0
    panels = Panels(original=x, masked=masked, reconstruction=x * 0.5, pasted=x)
    path = render(panels, AudioDataConfig(num_frames=64, num_mel_bins=32), tmp_path / "p")
    from PIL import Image

    with Image.open(path) as picture:
        scale = 3  # 32 mel bins enlarged to 96 px
        assert picture.size == (64 * scale, 2 * 4 * (32 * scale + 2) - 2 + 8)
        pixels = np.asarray(picture.convert("RGB"))
    masked_row = pixels[32 * scale + 2: 2 * 32 * scale + 2]  # sample 0, row 1
    assert (masked_row[:, : 16 * scale] == 128).all()  # the hidden frames are gray


def test_spec_is_registered_with_eval_support() -> None:
    assert SPEC.evaluation is not None and SPEC.demo_experiment == "audio_demo"
    assert SPEC.accepts("x.flac") and SPEC.accepts("x.MP3") and not SPEC.accepts("x.png")
    model = dataclasses.replace(ModelConfig(), patch_size=16)
    assert tuple(token_grids(model, (1, 512, 128))[0]) == (32, 8)
