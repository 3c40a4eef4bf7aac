"""The image modality: a folder of pictures (or the built-in demo photos), 2D patches.

Registered through the ``mim.plugins`` entry point exactly as a third-party modality would be.
"""
from mim.registry import MODALITIES
from mim.spec import EvalSupport, ModalitySpec
from mim.modalities.image import labelled, segment
from mim.modalities.image import presets  # noqa: F401  (mae_vit_*, lsmae_*, mcmae_* presets)
from mim.modalities.image.bands import run_band_names
from mim.modalities.image.bands import sample_shape as band_shape
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.image.dataset import (ImageFolder, build_dataset, data_stats, is_image_file,
                                          resolve_data)
from mim.modalities.image.pictures import render


def sample_shape(cfg: ImageDataConfig) -> tuple[int, ...]:
    return band_shape(cfg, cfg.input_size)  # (C, H, W), or (C, T, H, W) for time stacks


def resolutions(cfg: ImageDataConfig) -> list[tuple[int, ...]]:
    return [band_shape(cfg, size) for size in cfg.resolution_schedule]  # one per stage


def derived(cfg: ImageDataConfig) -> dict:
    """What ``derived.json`` says about the data: the bands by name, their statistics (in the
    file's units / data.scale) and nodata."""
    return {"reader": cfg.reader, "bands": run_band_names(cfg), "band_mean": cfg.mean,
            "band_std": cfg.std, "scale": cfg.scale, "nodata": cfg.nodata,
            "wavelengths": [cfg.wavelengths[i] for i in cfg.bands] if cfg.wavelengths else [],
            "time_steps": cfg.time_steps, "coords": cfg.coords and cfg.reader == "raster"}


# the data keys an evaluation or a picture of a run's weights takes from the run unless set:
# the input geometry, the bands and how they were normalised
INHERITED = ("input_size", "demo", "mean", "std", "reader", "bands", "band_names", "wavelengths",
             "layout", "dtype", "scale", "nodata", "valid_range", "time_steps", "stack",
             "date_pattern", "coords", "coords_file", "composite")


SPEC = ModalitySpec(
    name="image",
    data_config=ImageDataConfig,
    build_dataset=build_dataset,
    sample_shape=sample_shape,
    render=render,
    accepts=is_image_file,
    resolutions=resolutions,
    resolve_data=resolve_data,
    derived=derived,
    stats=data_stats,
    demo_experiment="demo",
    evaluation=EvalSupport(data_config=labelled.ImageEvalDataConfig, labelled=labelled.labelled,
                           inputs=labelled.inputs, inherit=INHERITED, resolve=labelled.resolve_eval,
                           size_keys=lambda size: {"input_size": size[-1]},
                           segmentation=segment.segmentation,
                           resolve_segment=segment.resolve_segment,
                           segment_rank=2),
)
MODALITIES.register("image", obj=SPEC)

__all__ = ["SPEC", "ImageDataConfig", "ImageFolder"]
