"""The volume modality: 3D scans (.npy / .npz / NIfTI) or the built-in demo phantoms, 3D cubes.

Registered through the ``mim.plugins`` entry point exactly as a third-party modality would be.
Default model: ViT-B on 16x16x16 cubes (``mae3d_vit_base_patch16``); see
``configs/experiment/volume_demo.yaml`` for a small, fast run. ``model=mcmae3d_small_patch16``: the
hybrid MCMAE encoder with masked 3D convolutions (``presets.py``).
"""
from mim.registry import MODALITIES
from mim.spec import EvalSupport, ModalitySpec
from mim.modalities.volume import labelled, segment
from mim.modalities.volume import presets  # noqa: F401  (mae3d_*, mcmae3d_* model presets)
from mim.modalities.volume.config import VolumeDataConfig
from mim.modalities.volume.dataset import VolumeDataset, build_dataset, is_volume_file
from mim.modalities.volume.pictures import render


def sample_shape(cfg: VolumeDataConfig) -> tuple[int, int, int, int]:
    return (cfg.channels, *cfg.input_size)  # (C, D, H, W)


SPEC = ModalitySpec(
    name="volume",
    data_config=VolumeDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
    accepts=is_volume_file,
    default_model="mae3d_vit_base_patch16",
    default_mask="random",
    demo_experiment="volume_demo",
    evaluation=EvalSupport(
        data_config=labelled.VolumeEvalDataConfig, labelled=labelled.labelled,
        inputs=labelled.inputs,
        inherit=("input_size", "channels", "intensity", "p_low", "p_high", "window_min",
                 "window_max", "zscore", "target_spacing", "pad_value"),
        size_keys=lambda size: {"input_size": list(size)},
        segmentation=segment.segmentation, resolve_segment=segment.resolve_segment,
        segment_rank=3),
)
MODALITIES.register("volume", obj=SPEC)

__all__ = ["SPEC", "VolumeDataConfig", "VolumeDataset"]
