"""Settings of ``mim eval``: common ones and one section per protocol, with MAE's defaults.

Defaults follow MAE's appendix A: linear probing (Table 10: LARS, base lr 0.1, weight decay 0,
momentum 0.9, 90 epochs with 10 of warmup, BatchNorm without affine before the classifier) and
end-to-end fine-tuning (Table 9: AdamW with betas 0.9 / 0.999, base lr 1e-3, weight decay 0.05,
layer-wise lr decay 0.75, 100 epochs with 5 of warmup, label smoothing 0.1, mixup 0.8, cutmix
1.0, drop path 0.1); lr = base lr x batch / 256. k-NN follows Wu et al. 2018 / DINO: cosine
similarity, the k = 20 nearest, votes weighted by exp(similarity / 0.07).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mim.engine import compiling

POOLS = ("auto", "cls", "avg")


@dataclass
class EvalSettings:
    init: str = "pretrained"  # pretrained | random (the same encoder at initialisation)
    pool: str = "auto"  # cls | avg (mean of the patch tokens) | auto: cls if the model has one
    batch_size: int = 64  # feature extraction and evaluation
    num_workers: int = 2  # data-loading processes
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    out: Optional[str] = None  # results folder, or a .json file; default <run.dir>/eval, or ./eval
    kernel_resize: str = "bicubic"  # patch-size transfer: bicubic (long-seq MAE) | pinv (FlexiViT)

    def __post_init__(self) -> None:
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"eval.init: '{self.init}' is not one of: pretrained, random")
        if self.pool not in POOLS:
            raise ValueError(f"eval.pool: '{self.pool}' is not one of: {', '.join(POOLS)}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("eval.batch_size / eval.num_workers: need >= 1 / >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"eval.device: '{self.device}' is not one of: auto, cpu, cuda")
        if self.kernel_resize not in ("bicubic", "pinv"):
            raise ValueError(f"eval.kernel_resize: '{self.kernel_resize}' is not one of: "
                             "bicubic, pinv")


@dataclass
class KnnConfig:
    k: int = 20  # neighbours that vote
    temperature: float = 0.07  # votes weighted by exp(similarity / temperature)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"knn.k: must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"knn.temperature: must be > 0, got {self.temperature}")


@dataclass
class Schedule:
    """Shared by the trained protocols: epochs, warmup and the lr (per process batch)."""

    epochs: int = 90  # passes over the training data
    warmup_epochs: float = 10.0  # linear lr warmup, then a cosine decay to min_lr
    batch_size: int = 256  # per process
    blr: float = 0.1  # base lr; lr = blr x batch / 256
    lr: Optional[float] = None  # absolute lr; overrides blr
    min_lr: float = 0.0  # the lr at the end of the cosine decay
    weight_decay: float = 0.0  # weight decay
    eval_every: int = 10  # epochs between validation passes (and one at the end)

    def check(self, section: str) -> None:
        for key in ("epochs", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{section}.{key}: must be >= 1, got {getattr(self, key)}")
        if self.warmup_epochs < 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError(f"{section}.warmup_epochs / min_lr / weight_decay: must be >= 0")
        if (self.blr is not None and self.blr <= 0) or (self.lr is not None and self.lr <= 0):
            raise ValueError(f"{section}.blr / {section}.lr: must be > 0")

    def peak_lr(self, batch: int) -> float:
        return self.lr if self.lr is not None else self.blr * batch / 256


@dataclass
class LinprobeConfig(Schedule):
    optimizer: str = "lars"  # lars | sgd (MAE: "SGD works similarly with a 4096 batch")
    momentum: float = 0.9  # momentum of LARS / SGD
    augment: bool = True  # MAE: RandomResizedCrop each epoch; false: features computed once

    def __post_init__(self) -> None:
        self.check("linprobe")
        if self.optimizer not in ("lars", "sgd"):
            raise ValueError(f"linprobe.optimizer: '{self.optimizer}' is not one of: lars, sgd")


@dataclass
class FinetuneConfig(Schedule):
    epochs: int = 100  # passes over the training data
    warmup_epochs: float = 5.0  # linear lr warmup, then a cosine decay to min_lr
    batch_size: int = 64  # per process
    blr: float = 1e-3  # base lr; lr = blr x batch / 256
    min_lr: float = 1e-6  # the lr at the end of the cosine decay
    weight_decay: float = 0.05  # weight decay
    eval_every: int = 5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (beta1, beta2)
    layer_decay: float = 0.75  # layer-wise lr decay: each block below the top x this
    drop_path: float = 0.1  # stochastic depth rate
    mixup: float = 0.8  # alpha; 0 disables
    cutmix: float = 1.0  # alpha; 0 disables
    smoothing: float = 0.1  # label smoothing
    clip_grad: Optional[float] = None  # clip the gradient norm to this; None: no clipping
    ema: bool = False  # keep an exponential moving average of the weights and evaluate it too
    ema_decay: float = 0.9999  # decay of that average per step
    blocks: Optional[int] = None  # partial fine-tuning: train only the last k blocks (+ norm)
    compile: str = "none"  # none | blocks (true) | model: as train.compile (engine/compiling.py)

    def __post_init__(self) -> None:
        self.check("finetune")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"finetune.layer_decay: must be in (0, 1], got {self.layer_decay}")
        if not 0 <= self.drop_path < 1 or not 0 <= self.smoothing < 1:
            raise ValueError("finetune.drop_path / finetune.smoothing: must be in [0, 1)")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("finetune.mixup / finetune.cutmix: must be >= 0")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"finetune.ema_decay: must be in (0, 1), got {self.ema_decay}")
        if self.blocks is not None and self.blocks < 0:
            raise ValueError(f"finetune.blocks: must be >= 0 or null, got {self.blocks}")
        self.compile = compiling.mode(self.compile, "finetune.compile")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"finetune.betas: two values in [0, 1) expected, got {self.betas}")


HEADS = ("auto", "linear", "upernet", "unetr")
# base lr per head (lr = blr x batch / 256): the frozen encoder's linear head learns from
# scratch at 1e-3 for a batch of 16; the fine-tuned heads take mmseg's MAE / BEiT UperNet rate
# (1e-4 at 16) and MONAI's UNETR tutorial's (1e-4)
HEAD_BLR = {"linear": 1.6e-2, "upernet": 1.6e-3, "unetr": 1.6e-3}


@dataclass
class SegmentConfig(Schedule):
    """``mim eval segment``: a head on the encoder's token maps, trained on crops, evaluated by
    sliding windows on whole images or volumes (``mim/eval/segment/``)."""

    # auto: linear for 2D labels, unetr for 3D | linear (frozen encoder, BatchNorm + 1x1 conv,
    # the DINOv2 linear protocol) | upernet (2D, fine-tuned: feature pyramid + UperNet) |
    # unetr (fine-tuned: UNETR's decoder, MONAI's blocks)
    head: str = "auto"
    epochs: int = 50  # passes over the training images or volumes
    warmup_epochs: float = 5.0  # linear lr warmup, then a cosine decay to min_lr
    batch_size: int = 16  # crops per step
    blr: Optional[float] = None  # base lr; None: the head's (HEAD_BLR)
    min_lr: float = 1e-6  # the lr at the end of the cosine decay
    weight_decay: float = 0.05  # AdamW's
    eval_every: int = 10  # epochs between validation passes (and one at the end)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (beta1, beta2)
    layer_decay: float = 0.65  # fine-tuned heads: each encoder block below the top x this
    drop_path: float = 0.1  # fine-tuned heads: stochastic depth of the encoder
    # encoder blocks (0-based) whose outputs feed the head; None: evenly spaced, 4 for upernet
    # (blocks 2, 5, 8, 11 of 12; mmseg's MAE config takes [3, 5, 7, 11]), log2(patch) for unetr
    # (UNETR's 3, 6, 9, 12 counted from 1), the last for linear (several: their maps
    # concatenated)
    blocks: Optional[list[int]] = None
    num_classes: Optional[int] = None  # None: from the class names or the largest label id
    ignore_index: int = 255  # label value left out of the loss and the metrics (mmseg's)
    reduce_zero_label: bool = False  # label 0 becomes ignore, the rest shift down (ADE20K)
    # training crops: each image or volume rescaled by a factor drawn in this range (None: the
    # modality's, images [0.5, 2.0] as mmseg's ADE20K pipeline, volumes [1, 1]), then a crop of
    # data.input_size, padded with ignore where smaller, and the modality's flips
    scale: Optional[list[float]] = None
    # the share of crops centred on a labelled (non-zero) voxel: MONAI's RandCropByPosNegLabel
    # at 1:1 for volumes; None: the modality's (images 0, volumes 0.5)
    foreground: Optional[float] = None
    overlap: float = 0.25  # sliding-window inference: overlap of neighbouring windows
    weighting: str = "auto"  # windows blended: constant | gaussian | auto (gaussian in 3D)
    channels: int = 512  # upernet's width (mmseg's)
    feature_size: int = 16  # unetr's feature_size (MONAI's)
    loss: str = "auto"  # ce | dice_ce | auto: ce in 2D, dice_ce in 3D (UNETR's)
    pictures: int = 0  # held-out items drawn as image | ground truth | prediction

    def __post_init__(self) -> None:
        self.check("segment")
        if self.head not in HEADS:
            raise ValueError(f"segment.head: '{self.head}' is not one of: {', '.join(HEADS)}")
        if not 0 < self.layer_decay <= 1 or not 0 <= self.drop_path < 1:
            raise ValueError("segment.layer_decay / segment.drop_path: must be in (0, 1] / [0, 1)")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"segment.num_classes: must be >= 2, got {self.num_classes}")
        if self.scale is not None and (len(self.scale) != 2 or not 0 < self.scale[0] <=
                                       self.scale[1]):
            raise ValueError(f"segment.scale: [low, high] with 0 < low <= high, got {self.scale}")
        if self.foreground is not None and not 0 <= self.foreground <= 1:
            raise ValueError(f"segment.foreground: must be in [0, 1], got {self.foreground}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"segment.overlap: must be in [0, 1), got {self.overlap}")
        if self.weighting not in ("auto", "constant", "gaussian"):
            raise ValueError(f"segment.weighting: '{self.weighting}' is not one of: auto, "
                             "constant, gaussian")
        if self.loss not in ("auto", "ce", "dice_ce"):
            raise ValueError(f"segment.loss: '{self.loss}' is not one of: auto, ce, dice_ce")
        if min(self.channels, self.feature_size) < 1 or self.pictures < 0:
            raise ValueError("segment.channels / segment.feature_size / segment.pictures: "
                             "must be >= 1 / >= 1 / >= 0")
        if self.blocks is not None and (not self.blocks or min(self.blocks) < 0):
            raise ValueError(f"segment.blocks: block indices >= 0 expected, got {self.blocks}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"segment.betas: two values in [0, 1) expected, got {self.betas}")

    def peak_lr(self, batch: int) -> float:
        if self.lr is not None:
            return self.lr
        return (self.blr if self.blr is not None else HEAD_BLR[self.head]) * batch / 256


PROTOCOLS: dict[str, type] = {"knn": KnnConfig, "linprobe": LinprobeConfig,
                              "finetune": FinetuneConfig, "segment": SegmentConfig}
