"""``modality=omni``: one encoder pretrained on images and video together (OmniMAE).

Girdhar et al. 2022 (OmniMAE) train a single ViT on images and videos: an image is a clip of
repeated frames, so the same 2x16x16 cube tokenizer and weights serve both; each source keeps
its own mask (OmniMAE: 90 % on images, 95 % on video) and the two are mixed per step. Here the
video source uses the run's ``mask`` and ``data.video``; the image source uses
``data.image`` with ``data.image_mask`` at ``data.image_mask_ratio``, as a clip of
``data.image_frames`` repeated frames; ``data.image_weight`` is its share of the steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mim.data import MimDataset
from mim.masking import build_mask
from mim.modalities import image, video
from mim.modalities.image.config import ImageDataConfig
from mim.modalities.video.config import VideoDataConfig
from mim.registry import MODALITIES
from mim.spec import ModalitySpec
from mim.data.stream import Source


@dataclass
class OmniDataConfig:
    video: VideoDataConfig = field(default_factory=VideoDataConfig)
    image: ImageDataConfig = field(default_factory=ImageDataConfig)
    image_weight: float = 0.5  # share of the steps that train on images
    image_frames: int = 2  # an image becomes a clip of this many repeated frames (one cube)
    image_mask: str = "random"  # mask policy of the image steps
    image_mask_ratio: float = 0.9  # mask ratio of the image steps

    def __post_init__(self) -> None:
        if not 0.0 < self.image_weight < 1.0:
            raise ValueError(f"data.image_weight: must be in (0, 1), got {self.image_weight}")
        if self.image_frames < 1:
            raise ValueError(f"data.image_frames: must be >= 1, got {self.image_frames}")
        if self.image.resolution_schedule:  # image and video steps would need sizes in step
            raise ValueError("data.image.resolution_schedule: not supported by modality=omni; "
                             "valid: [] (with modality=image)")

    @property
    def root(self) -> str | None:  # for the run's log line
        roots = [r for r in (self.video.root or self.video.list_file, self.image.root) if r]
        return ", ".join(roots) or None


class RepeatedFrames(MimDataset):
    """An image dataset seen as clips: [C, H, W] -> [C, frames, H, W]."""

    def __init__(self, images: MimDataset, frames: int):
        self.images, self.frames = images, frames

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        return self.images.describe(index)

    def identity(self) -> dict:
        return self.images.identity()  # the images' (their shards, when packed)

    def load(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        x, label = self.images.load(index, seed)  # [C, H, W]
        return x.unsqueeze(1).repeat(1, self.frames, 1, 1), label  # [C, T, H, W]


def image_shape(cfg: OmniDataConfig) -> tuple[int, int, int, int]:
    return (3, cfg.image_frames, cfg.image.input_size, cfg.image.input_size)  # (C, T, H, W)


def sources(cfg: OmniDataConfig) -> list[Source]:
    image_mask = build_mask(cfg.image_mask, ratio=cfg.image_mask_ratio)
    return [
        Source("video", video.build_dataset(cfg.video), video.sample_shape(cfg.video), None,
               1.0 - cfg.image_weight, cfg.video.repeat),
        Source("image", RepeatedFrames(image.build_dataset(cfg.image), cfg.image_frames),
               image_shape(cfg), image_mask, cfg.image_weight, 1),
    ]


def render(panels, cfg: OmniDataConfig, stem):
    return video.render(panels, cfg.video, stem)  # the pictures show the video source


SPEC = ModalitySpec(
    name="omni",
    data_config=OmniDataConfig,
    build_dataset=lambda cfg: sources(cfg)[0].dataset,
    sample_shape=lambda cfg: video.sample_shape(cfg.video),
    render=render,
    default_model="videomae_vit_base_patch16_16x224",
    default_mask="tube",
    views=lambda cfg: cfg.video.repeat,
    sources=sources,
    demo_experiment="omni_demo",
)
MODALITIES.register("omni", obj=SPEC)
