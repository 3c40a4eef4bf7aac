"""The audio modality: any sound file -> Kaldi log mel filterbanks, on AudioMAE's recipe.

Sound files (WAV, FLAC, OGG, MP3 through soundfile; M4A, AAC, Opus and videos' audio streams
through PyAV: ``decode.py``) are read a clip at a time, resampled to ``data.sample_rate`` and
turned into ``[C, frames, mel]`` filterbanks (``fbank.py``: Kaldi's, as AudioMAE computes them),
normalised with AudioSet's statistics or the data's own. The default model is AudioMAE's ViT-B
on 16 x 16 patches (``presets.py``: a 64 x 8 grid on 1024 x 128), masked at random; the
experiment ``audio_demo`` pretrains a small one on the built-in synthetic sounds (``demo.py``).
Registered through the ``mim.plugins`` entry point exactly as a third-party modality would be.
"""
from mim.registry import MODALITIES
from mim.spec import EvalSupport, ModalitySpec
from mim.modalities.audio import labelled
from mim.modalities.audio import presets  # noqa: F401  (audiomae_* model presets)
from mim.modalities.audio.config import AudioDataConfig
from mim.modalities.audio.dataset import AudioDataset, build_dataset, resolve_data
from mim.modalities.audio.decode import is_audio_file
from mim.modalities.audio.fbank import fbank
from mim.modalities.audio.pictures import VisualizeOptions, render


def sample_shape(cfg: AudioDataConfig) -> tuple[int, int, int]:
    return (cfg.channels, cfg.num_frames, cfg.num_mel_bins)  # (C, frames, mel)


def derived(cfg: AudioDataConfig) -> dict:
    """What derived.json says about the clips: their length and normalisation."""
    return {"clip_seconds": round(cfg.seconds, 4), "sample_rate": cfg.sample_rate,
            "fbank_mean": float(cfg.mean), "fbank_std": float(cfg.std)}


SPEC = ModalitySpec(
    name="audio",
    data_config=AudioDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
    visualize_options=VisualizeOptions,
    accepts=is_audio_file,
    default_model="audiomae_vit_base_patch16_1024x128",
    default_mask="random",
    mask_defaults={"ratio": 0.8},  # AudioMAE's pretraining ratio (Sec. 4.1)
    demo_experiment="audio_demo",
    uses_builtin_data=lambda cfg: cfg.root is None and cfg.list_file is None,
    resolve_data=resolve_data,
    derived=derived,
    evaluation=EvalSupport(
        data_config=labelled.AudioEvalDataConfig, labelled=labelled.labelled,
        inputs=labelled.inputs,
        inherit=("sample_rate", "channels", "num_frames", "num_mel_bins", "mean", "std"),
        size_keys=lambda size: {"num_frames": size[0], "num_mel_bins": size[1]},
        resolve=resolve_data),
)
MODALITIES.register("audio", obj=SPEC)

__all__ = ["SPEC", "AudioDataConfig", "AudioDataset", "fbank"]
