"""The image modality: a folder of pictures (or the built-in demo photos), 2D patches.

Registered through the ``mim.plugins`` entry point exactly as a third-party modality would be.
"""
from mim.registry import MODALITIES
from mim.spec import EvalSupport, ModalitySpec
from mim.modalities.image import labelled
from mim.modalities.image import presets  # noqa: F401  (mae_vit_*, lsmae_*, mcmae_* presets)
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import ImageFolder, build_dataset, is_image_file
from mim.modalities.image.pictures import render


def sample_shape(cfg: ImageDataConfig) -> tuple[int, int, int]:
    return (3, cfg.input_size, cfg.input_size)  # (C, H, W)


def resolutions(cfg: ImageDataConfig) -> list[tuple[int, int, int]]:
    return [(3, size, size) for size in cfg.resolution_schedule]  # (C, H, W) per stage


SPEC = ModalitySpec(
    name="image",
    data_config=ImageDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
    accepts=is_image_file,
    resolutions=resolutions,
    demo_experiment="demo",
    evaluation=EvalSupport(data_config=labelled.ImageEvalDataConfig, labelled=labelled.labelled,
                           inputs=labelled.inputs, inherit=("input_size", "mean", "std"),
                           size_keys=lambda size: {"input_size": size[-1]}),
)
MODALITIES.register("image", obj=SPEC)

__all__ = ["SPEC", "ImageDataConfig", "ImageFolder"]
