"""``ModalitySpec``: everything ``mim train modality=X`` needs to know about a modality.

A modality package registers one spec (``MODALITIES.register(spec.name, obj=spec)``), either
built in (``mim.modalities.*``) or from a third-party package through the ``mim.plugins`` entry
point group. The core only ever talks to the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mim.data import MimDataset
from mim.data.stream import Source


@dataclass(frozen=True)
class Panels:
    """Reconstruction pictures for a few samples, all [N, C, *spatial] in the input's domain."""

    original: torch.Tensor
    masked: torch.Tensor  # visible patches only, masked patches zero
    reconstruction: torch.Tensor
    pasted: torch.Tensor  # reconstruction with the visible patches pasted back


@dataclass(frozen=True)
class LabelledData:
    """Labelled splits for ``mim eval``: the same items seen three ways."""

    train: MimDataset  # training views, augmented from each sample's seed (probe, fine-tune)
    train_plain: MimDataset  # the training items in their deterministic test view(s) (k-NN)
    val: MimDataset  # held-out items, test view(s): x [C, *spatial] or V views [V, C, *spatial]
    classes: list[str]
    # fine-tuning's training views where the modality adds stronger augmentation (image:
    # RandAugment and random erasing, MAE Table 11); None: ``train``
    train_strong: Optional[MimDataset] = None


@dataclass(frozen=True)
class SegmentData:
    """Labelled splits for ``mim eval segment``: whole items as ``Sample(x, label)`` with x
    [C, *spatial] normalised as in pretraining and label a class-id map [*spatial] (int64, the
    ignore index where there is no label); the core crops, rescales and flips them
    (``mim/data/segmentation.py``)."""

    train: MimDataset
    val: MimDataset
    classes: list[str]  # class names, in id order
    rank: int  # spatial axes of a label map (image 2, volume 3)
    flips: tuple[float, ...]  # P(flip) of each spatial axis in training (image: H 0, W 0.5)
    scale: tuple[float, float] = (1.0, 1.0)  # training rescale range (``segment.scale``)
    foreground: float = 0.0  # share of training crops centred on a labelled pixel or voxel
    # (x [C, *spatial], label [*spatial], prediction [*spatial], classes, path stem) -> the
    # picture written (``segment.pictures``); None: the modality draws none
    render: Optional[Callable[..., Path]] = None


@dataclass(frozen=True)
class EvalSupport:
    """What a modality provides for evaluation and ``mim visualize``."""

    data_config: type  # schema of ``data`` in ``mim eval`` (a labelled demo set by default)
    labelled: Callable[[Any], LabelledData]  # eval data config -> splits
    inputs: Callable[[Any, Path], MimDataset]  # config, a file or folder -> one test view each
    # keys of the pretraining run's ``data`` an evaluation inherits unless set (input geometry,
    # normalisation); and the same from a spatial input size alone (converted weights)
    inherit: tuple[str, ...] = ()
    size_keys: Callable[[tuple[int, ...]], dict[str, Any]] = lambda size: {}
    # eval data config -> the same with what the labelled files decide (as resolve_data)
    resolve: Callable[[Any], Any] | None = None
    # (eval data config, SegmentRules) -> SegmentData for ``mim eval segment``; None: the
    # modality has no segmentation data; and its ``resolve`` (the bands and statistics of the
    # images, not of the annotations beside them)
    segmentation: Callable[[Any, Any], SegmentData] | None = None
    resolve_segment: Callable[[Any], Any] | None = None
    # the spatial axes of its label maps (image 2, volume 3): a sample's last axes; those
    # before them (a time stack's dates) are averaged by the heads
    segment_rank: int = 0


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    data_config: type  # dataclass: schema and defaults of ``cfg.data``
    build_dataset: Callable[[Any], MimDataset]  # data config -> dataset (demo data if no root)
    sample_shape: Callable[[Any], tuple[int, ...]]  # data config -> (C, *spatial)
    render: Callable[[Panels, Any, Path], Path]  # panels, data config, path stem -> picture file
    # dataclass: the modality's own ``mim visualize`` keys (``visualize.*``; audio: ``audio``
    # writes the reconstruction as sound); render then takes its value as ``options=``. None:
    # the modality has none
    visualize_options: type | None = None
    default_model: str | None = None  # model preset chosen by ``modality=<name>``
    default_mask: str | None = None  # mask policy chosen by ``modality=<name>``
    # fields the modality sets on whichever mask a run takes, where the policy has them (audio:
    # AudioMAE's ratio 0.8); the command line and experiments still win
    mask_defaults: dict = field(default_factory=dict)
    views: Callable[[Any], int] = lambda cfg: 1  # clips per item (repeated sampling)
    # several data sources mixed per step (OmniMAE); None: one source from build_dataset
    sources: Callable[[Any], list[Source]] | None = None
    # data config -> the sample shapes (C, *spatial) of its progressive-resolution stages, equal
    # lengths over the run, the last the full size ([]: one size; ``mim/data/resolution.py``); None:
    # the modality has no such schedule
    resolutions: Callable[[Any], list[tuple[int, ...]]] | None = None
    evaluation: EvalSupport | None = None  # labelled data for ``mim eval`` / ``mim visualize``
    # a file name -> True where the modality reads such a file: ``mim data pack`` packs the
    # files some modality accepts and skips the rest (None: the modality names no files)
    accepts: Callable[[str], bool] | None = None
    # the experiment (a config of the group ``experiment``) sized for the built-in data: a run
    # with no data of its own and no experiment chosen takes it (``mim/config/compose.py``)
    demo_experiment: str | None = None
    # data config -> True when it names no data, so the modality reads its built-in demo data
    uses_builtin_data: Callable[[Any], bool] = lambda cfg: getattr(cfg, "root", None) is None
    # data config -> the same with what its files decide (image: the reader, the bands, their
    # names, dtype, nodata, auto statistics); validation calls it once, before any compute, and
    # writes what it changed back into the run's config (config.yaml, --cfg, checkpoints)
    resolve_data: Callable[[Any], Any] | None = None
    # resolved data config -> what derived.json says about the data (image: the bands by
    # name, band_mean, band_std, nodata)
    derived: Callable[[Any], dict] = lambda cfg: {}
    # resolved data config -> per-band statistics of its files (``mim data stats``; image:
    # names, mean, std, min, max, nodata_fraction, files read); None: the modality has none
    stats: Callable[[Any], dict] | None = None
