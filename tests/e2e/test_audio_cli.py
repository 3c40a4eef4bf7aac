"""``mim train modality=audio`` through the real command line: the demo, every file format
made here with soundfile and PyAV (bad files skipped with their path and reason, short ones
padded and counted), ``mim eval knn`` on the held-out sounds, and the timm export."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from PIL import Image

pytestmark = pytest.mark.e2e

RATE = 16000
# the demo made tiny: 1.29 s clips (128 frames: an 8 x 8 grid), 2 blocks of width 48
TINY = ["modality=audio", "experiment=audio_demo", "data.num_frames=128", "model.embed_dim=48",
        "model.depth=2", "model.num_heads=3", "model.decoder_embed_dim=32",
        "model.decoder_depth=2", "model.decoder_num_heads=2", "train.batch_size=8",
        "train.num_workers=0", "train.log_every=1", "train.max_steps=12", "train.vis_every=12",
        "train.ckpt_every=12", "optim.warmup_steps=2", "train.precision=fp32"]


def sine(seconds: float, freq: float = 440.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, 1) if channels > 1 else wave


def encode_with_pyav(path: Path, wave: np.ndarray, codec: str, rate: int = 48000,
                     video: bool = False) -> None:
    """``wave`` [N] at ``rate`` into ``path`` with PyAV's ``codec`` (and a few video frames)."""
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=10) if video else None
        if picture is not None:
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream(codec, rate=rate)
        sound.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in sound.encode(frame):
            out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
        if picture is not None:
            for i in range(10):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, np.uint8),
                                                   format="rgb24")
                out.mux(picture.encode(image))
            for packet in picture.encode(None):
                out.mux(packet)


def video_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(
                np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A folder of every format (the good ones) and of bad files (each named with its kind)."""
    root = tmp_path_factory.mktemp("sounds")
    sf.write(str(root / "int16.wav"), sine(2.0), RATE, subtype="PCM_16")
    sf.write(str(root / "float.wav"), sine(2.0, 660), 44100 // 2, subtype="FLOAT")
    sf.write(str(root / "stereo.flac"), sine(2.0, 550, 44100, channels=2), 44100)
    sf.write(str(root / "vorbis.ogg"), sine(2.0, 330, 22050), 22050, subtype="VORBIS")
    sf.write(str(root / "layer3.mp3"), sine(2.0, 880, 24000), 24000, format="MP3")
    sf.write(str(root / "eight.wav"), sine(2.0, 440, 192000, channels=8), 192000)
    encode_with_pyav(root / "aac.m4a", sine(2.0, 500, 48000), "aac")
    encode_with_pyav(root / "opus.opus", sine(2.0, 700, 48000), "libopus")
    encode_with_pyav(root / "movie.mp4", sine(2.0, 600, 48000), "aac", video=True)
    sf.write(str(root / "short.wav"), sine(0.3), RATE)  # padded, counted
    good = ["int16.wav", "float.wav", "stereo.flac", "vorbis.ogg", "layer3.mp3", "eight.wav",
            "aac.m4a", "opus.opus", "short.wav"]
    full = (root / "int16.wav").read_bytes()
    (root / "truncated.wav").write_bytes(full[:len(full) // 8])  # header promises more
    (root / "notes.wav").write_text("these are not sounds\n" * 20)
    (root / "empty.flac").write_bytes(b"")
    sf.write(str(root / "one.wav"), np.zeros(1, np.float32), RATE)
    nan = sine(2.0)
    nan[::4000] = np.nan  # in every clip: the reader checks the window it reads
    sf.write(str(root / "nan.wav"), nan, RATE, subtype="FLOAT")
    video_only(root / "silent_movie.mp4")
    bad = ["truncated.wav", "notes.wav", "empty.flac", "one.wav", "nan.wav", "silent_movie.mp4"]
    (root / "list.txt").write_text("".join(f"{name}\n" for name in good + bad + ["movie.mp4"]))
    return root, good + ["movie.mp4"], bad


@pytest.fixture(scope="module")
def demo_run(module_cli, tmp_path_factory) -> tuple[Path, dict]:
    run, cache = tmp_path_factory.mktemp("audio") / "run", tmp_path_factory.mktemp("cache")
    env = {"MIM_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    result = module_cli.run("train", *TINY, f"run.dir={run}", env=env)
    assert result.returncode == 0, module_cli.describe(result)
    return run, env


def test_the_demo_trains_with_audiomaes_mask_and_draws_spectrograms(module_cli, demo_run):
    run, env = demo_run
    records = module_cli.metrics(run)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert records[-1]["loss"] < records[0]["loss"]
    config = OmegaConf.load(run / "config.yaml")
    assert config.mask.name == "random" and config.mask.ratio == 0.8  # the modality's default
    assert config.model.name == "audiomae_vit_tiny_patch16"
    derived = json.loads((run / "derived.json").read_text())
    assert derived["grid"] == [8, 8] and derived["masked_tokens"] == 52  # MAE keeps int(64 * 0.2)
    assert derived["clip_seconds"] == 1.295 and derived["sample_rate"] == RATE
    with Image.open(run / "pictures" / "step_00000012.png") as picture:
        # 4 samples x 4 rows of 128 mel bins (no enlarging) over 128 frames
        assert picture.size == (128, 4 * 4 * 130 - 2 + 3 * 8)


def test_every_format_trains_and_bad_files_are_skipped_with_their_reason(cli, tmp_path,
                                                                          folder):
    root, good, bad = folder
    run = tmp_path / "run"
    args = [a if not a.startswith("train.max_steps=") else "train.max_steps=4" for a in TINY]
    result = cli.run("train", *args, f"data.list_file={root / 'list.txt'}",
                     "train.max_unreadable=0.9",  # 6 of 16 files are bad
                     f"run.dir={run}", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, cli.describe(result)
    log = (run / "train.log").read_text()
    skipped = [line for line in log.splitlines() if "skipped unreadable item" in line]
    for name in bad:
        assert any(str(root / name) in line for line in skipped), (name, log)
    for name in good:
        assert not any(str(root / name) in line for line in skipped), (name, log)
    records = cli.metrics(run)
    assert sum(r["skipped"] for r in records) > 0 and all(np.isfinite(r["loss"]) for r in records)
    assert sum(r["padded"] for r in records) >= 1  # every pass reads short.wav once
    assert "0.30 s of a 1.29 s clip, padded with silence" in log


def test_visualize_writes_the_rows_as_sound(module_cli, demo_run, tmp_path):
    """visualize.audio=true: the original, reconstruction and pasted rows as 16-bit WAVs of the
    clip's length at the run's rate; the original row's sound is the input's 440 Hz tone."""
    from mim.modalities.audio.fbank import frame_sizes

    run, env = demo_run
    sf.write(tmp_path / "tone.wav", sine(2.0), RATE)
    out = tmp_path / "pictures"
    result = module_cli.run("visualize", f"run.dir={run}", f"input={tmp_path / 'tone.wav'}",
                            "visualize.audio=true", "visualize.iterations=8", f"out={out}",
                            env=env)
    assert result.returncode == 0, module_cli.describe(result)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["reconstruction_000.png"] + [
        f"reconstruction_000_00_{row}.wav" for row in ("original", "pasted", "reconstruction")]
    window, shift, _ = frame_sizes(RATE, 25.0, 10.0)
    sounds = {}
    for row in ("original", "reconstruction", "pasted"):
        info = sf.info(out / f"reconstruction_000_00_{row}.wav")
        assert (info.samplerate, info.subtype, info.channels) == (RATE, "PCM_16", 1)
        assert info.frames == window + shift * 127  # 128 frames again
        sounds[row] = sf.read(out / f"reconstruction_000_00_{row}.wav")[0]
    spectrum = np.abs(np.fft.rfft(sounds["original"]))
    peak = np.fft.rfftfreq(len(sounds["original"]), 1 / RATE)[spectrum.argmax()]
    assert abs(peak - 440) < 60, peak
    assert not np.allclose(sounds["original"], sounds["reconstruction"])
    refused = module_cli.run("visualize", f"run.dir={run}", f"input={tmp_path / 'tone.wav'}",
                             "visualize.sound=true", f"out={out}", env=env)
    assert refused.returncode == 2 and "visualize.sound" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_knn_on_the_held_out_demo_sounds(module_cli, demo_run):
    run, env = demo_run
    result = module_cli.run("eval", "knn", f"run.dir={run}", "eval.num_workers=0", env=env)
    assert result.returncode == 0, module_cli.describe(result)
    out = json.loads((run / "eval" / "knn-pretrained.json").read_text())
    assert out["init"] == "pretrained" and 0 <= out["metrics"]["top1"] <= 100


def test_the_timm_export_loads_as_the_communitys_audio_vit(module_cli, demo_run, tmp_path):
    import timm

    from mim import load_pretrained

    run, env = demo_run
    out = tmp_path / "timm"
    result = module_cli.run("convert", f"input={run}", "to=timm", f"output={out}", env=env)
    assert result.returncode == 0, module_cli.describe(result)
    # the layout of the community's port (vit_base_patch16_1024_128.audiomae_as2m): timm's
    # ViT at the clip's size, one channel; num_classes=0 as the export holds no classifier
    vit = timm.create_model("vit_tiny_patch16_224", img_size=(128, 128), in_chans=1,
                            embed_dim=48, depth=2, num_heads=3, num_classes=0, pretrained=True,
                            pretrained_cfg_overlay={"file": str(out / "model.safetensors")})
    ours = load_pretrained(str(run)).eval()
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval().forward_features(x), ours.encode(x).tokens,
                                   atol=2e-5, rtol=0)


@pytest.mark.parametrize("image", [False, True])
def test_model_init_from_audiomae_and_from_an_image_mae(cli, tmp_path, image):
    """AudioMAE's own checkpoint starts an audio run; so does an image MAE (AudioMAE starts
    from ImageNet): 3 channels summed into 1, 14 x 14 sin-cos positions recomputed for 8 x 8."""
    from tests.unit.test_audio_convert import audiomae_checkpoint

    ckpt = audiomae_checkpoint(tmp_path / "ckpt.pth", frames=128, image=image)
    args = [a for a in TINY if not a.startswith(("model.embed_dim", "train.max_steps"))]
    run = tmp_path / "run"
    result = cli.run("train", *args, "model.embed_dim=192", "train.max_steps=1",
                     f"model.init={ckpt}", f"run.dir={run}", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, cli.describe(result)
    line = next(x for x in result.stderr.splitlines() if "model.init:" in x and "loaded" in x)
    assert "loaded: cls_token, tokenizer, blocks, norm" in line, line
    if image:
        assert "patch kernel" in result.stderr, cli.describe(result)  # 3 -> 1 channel, said
    else:
        assert "AudioMAE's local decoder" in result.stderr, cli.describe(result)


def test_finetuning_with_specaugment_and_mixup_on_longer_clips(module_cli, demo_run, tmp_path):
    """Fine-tuning on 2.58 s clips of an encoder pretrained on 1.29 s ones: the grid grows
    from 8 x 8 to 16 x 8 (sin-cos positions computed for it), SpecAugment and mixup on."""
    run, env = demo_run
    out = tmp_path / "finetune.json"
    result = module_cli.run("eval", "finetune", f"run.dir={run}", "data.num_frames=256",
                            "finetune.epochs=1", "finetune.batch_size=16", "finetune.mixup=0.5",
                            "finetune.cutmix=0", "eval.num_workers=0", f"eval.out={out}",
                            env=env)
    assert result.returncode == 0, module_cli.describe(result)
    tuned = json.loads(out.read_text())
    assert tuned["data"]["num_frames"] == 256 and tuned["data"]["timem"] is None  # 48 frames
    assert 0 <= tuned["metrics"]["top1"] <= 100 and tuned["metrics"]["history"]
