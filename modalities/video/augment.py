"""VideoMAE's fine-tuning view of a clip (Tong et al. 2022, Appendix, Kinetics fine-tuning): the
training crop and flip, then RandAugment applied alike to every frame, then random erasing.

RandAugment is timm's (``data.randaug``; VideoMAE's Kinetics recipe is ``rand-m7-n4-mstd0.5-inc1``,
4 operations of magnitude 7 +- 0.5). A clip must stay one scene, so every frame gets the same
operations with the same magnitudes and signs: timm draws them from Python's and NumPy's global
generators, which are seeded with one clip seed before each frame (and restored after). Random
erasing follows VideoMAE too: each frame, with probability ``data.reprob``, gets its own
rectangle of noise (timm's ``RandomErasing`` on the [T, C, H, W] clip). Every draw comes from the
clip's own generator, so a view is a function of its seed.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from mim.modalities.image.augment import erase, randaugment, seeded_globals
from mim.modalities.video.transforms import ClipTransform


class FinetuneClipTransform(ClipTransform):
    """uint8 frames [T, H, W, 3] -> [3, T, size, size]: crop and flip, RandAugment (one draw for
    the clip), normalise, random erasing per frame."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.randaug = randaugment(cfg.randaug, cfg.input_size, cfg.mean) if cfg.randaug else None
        self.reprob = cfg.reprob

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: random.Random,
                 full: tuple[int, int] | None = None) -> torch.Tensor:
        square = self.crop_flip(frames, rng, full)  # [T, 3, size, size] uint8
        if self.randaug is not None:
            seed = rng.getrandbits(32)
            pictures = []
            for frame in square.permute(0, 2, 3, 1).numpy():  # each [size, size, 3]
                with seeded_globals(seed):  # the same operations for every frame
                    pictures.append(np.asarray(self.randaug(Image.fromarray(frame))))
            square = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)  # [T, 3, S, S]
        x = self.normalise(square)  # [3, T, size, size]
        for frame in x.unbind(1):  # each [3, size, size], a view into x
            if rng.random() < self.reprob:
                erase(frame, rng)
        return x
