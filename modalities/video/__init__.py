"""The video modality: a folder or list of videos (or the built-in demo clips), space-time cubes.

Decoding by frame index with decord (default; PyAV where decord is not installed) or PyAV
(``data.decoder``) through the native reader (default: measured 2x (decord) to 10x (PyAV) faster
than pytorchvideo's
``EncodedVideo.get_clip``, and seed-exact so a resumed run sees the same clips), or through
pytorchvideo's EncodedVideo, clip sampler and functional transforms with
``data.reader=pytorchvideo``. VideoMAE's defaults: 16 frames every 4th,
2x16x16 cubes, 90 % tube masking, ViT-B. Registered through the ``mim.plugins`` entry point
exactly as a third-party modality would be.
"""
from mim.registry import MODALITIES
from mim.spec import EvalSupport, ModalitySpec
from mim.modalities.video import labelled
from mim.modalities.video import presets  # noqa: F401  (videomae_*, maest_* model presets)
from mim.modalities.video import videomae  # noqa: F401  (Hugging Face VideoMAE weights)
from mim.modalities.video.config import VideoDataConfig
from mim.modalities.video.dataset import VideoDataset, build_dataset, is_video_file
from mim.modalities.video.pictures import render


def sample_shape(cfg: VideoDataConfig) -> tuple[int, int, int, int]:
    return (3, cfg.num_frames, cfg.input_size, cfg.input_size)  # (C, T, H, W)


def views(cfg: VideoDataConfig) -> int:
    return cfg.repeat  # clips per decoded video (repeated sampling)


SPEC = ModalitySpec(
    name="video",
    data_config=VideoDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
    accepts=is_video_file,
    default_model="videomae_vit_base_patch16_16x224",
    default_mask="tube",
    views=views,
    demo_experiment="video_demo",
    uses_builtin_data=lambda cfg: cfg.root is None and cfg.list_file is None,
    evaluation=EvalSupport(
        data_config=labelled.VideoEvalDataConfig, labelled=labelled.labelled,
        inputs=labelled.inputs,
        inherit=("num_frames", "sampling_rate", "input_size", "mean", "std", "decoder",
                 "pad_short"),
        size_keys=lambda size: {"num_frames": size[0], "input_size": size[-1]}),
)
MODALITIES.register("video", obj=SPEC)

__all__ = ["SPEC", "VideoDataConfig", "VideoDataset"]
