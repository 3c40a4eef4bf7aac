"""``preprocessor_config.json`` of a Hugging Face export: the run's input size and normalisation.

Written as the JSON transformers' own processors save, so ``AutoImageProcessor.from_pretrained``
gives a ``ViTImageProcessor`` (2D patches) or ``VideoMAEImageProcessor`` (cubes) that resizes to
the size the weights were trained at and normalises with the run's mean and std (the
modality's data config; ImageNet's where the source did not record them). Resampling follows
the modality's pipelines: bicubic for images (MAE), bilinear for video frames (VideoMAE).
"""
from __future__ import annotations

from pathlib import Path

from mim.convert.common import Converted
from mim.convert.provenance import run_facts
from mim.convert.storage import write_json

BICUBIC, BILINEAR = 3, 2  # PIL.Image.Resampling values, as transformers stores them
RESCALE = 1 / 255  # uint8 pixels -> [0, 1], before the normalisation


def preprocessor_config(conv: Converted, grid: tuple[int, ...]) -> dict:
    """The processor settings for weights on ``grid`` (2D: (h, w); 3D: (t, h, w))."""
    cfg = conv.config
    mean, std = run_facts(conv).normalisation()
    height, width = grid[-2] * cfg.patch_size, grid[-1] * cfg.patch_size
    common = {"do_resize": True, "do_rescale": True, "rescale_factor": RESCALE,
              "do_normalize": True, "image_mean": mean, "image_std": std}
    if len(grid) == 2:
        return {**common, "image_processor_type": "ViTImageProcessor", "resample": BICUBIC,
                "size": {"height": height, "width": width}}
    return {**common, "image_processor_type": "VideoMAEImageProcessor", "resample": BILINEAR,
            "size": {"shortest_edge": min(height, width)}, "do_center_crop": True,
            "crop_size": {"height": height, "width": width}}


def write_preprocessor(conv: Converted, folder: Path, grid: tuple[int, ...]) -> None:
    write_json(preprocessor_config(conv, grid), folder / "preprocessor_config.json")
