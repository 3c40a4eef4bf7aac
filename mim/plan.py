"""``plan(spec, world_size)``: everything a run derives from its config, computed once.

The data sources and their feeds (the mask on each source's grid, the items per process and
micro-step, the items of one pass), the schedule (steps, warmup, learning rate), the
progressive-resolution stages, and the values ``derived.json`` and ``--cfg`` show
(``Plan.derived``). ``mim train`` builds its run from a plan and ``mim train ... --cfg`` prints
one, so the two cannot differ. Nothing is written: only the data is indexed (building the
sources), and its errors are config errors, raised before any compute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mim.data import resolution
from mim.config.run_spec import RunSpec
from mim.config.errors import ConfigError
from mim.data import MaskingCollate
from mim.engine.optim import effective_lr
from mim.models.factory import check_decoder_grid, token_grids
from mim.models.flops import forward_flops
from mim.masking import decoder_targets
from mim.rundir import run_dir
from mim.data.stream import Feed, Source, epoch_steps


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float
    warmup_rule: str = ""  # which setting gave warmup_steps (derived.json says it)


@dataclass
class Plan:
    """A run's derived values; ``feeds[0].shape_at`` holds its resolution stages."""

    spec: RunSpec
    world_size: int
    sources: list[Source]
    feeds: list[Feed]
    schedule: Schedule
    steps_per_epoch_by_source: dict[str, int | None]

    @property
    def in_chans(self) -> int:
        return self.sources[0].sample_shape[0]

    def flops(self) -> dict[str, float]:
        """GFLOPs of one sample's forward through the encoder and the decoder, at the run's
        sample shape (the last resolution stage's)."""
        return _sample_flops(self.spec, self.sources[0].sample_shape)

    @property
    def nodata(self) -> bool:
        """Samples may hold NaN for no data: the model zeroes and never scores it."""
        return any(source.dataset.nodata for source in self.sources)

    @property
    def global_batch(self) -> int:
        """Clips per micro-step, all ranks."""
        return self.spec.train.batch_size * self.world_size

    @property
    def samples_per_epoch(self) -> int:
        """Samples in one pass over every source."""
        return sum(f.per_epoch(self.world_size) * f.source.views for f in self.feeds)

    def derived(self, params: dict[str, int], precision: str, reason: str, compile: str,
                lr: float | None = None) -> dict[str, Any]:
        """What ``derived.json`` holds and ``--cfg`` prints: the plan, and what building the
        run adds (``params``: encoder and decoder parameter counts; the backend's precision,
        why, and its compile mode; ``lr``: a resumed run's, the checkpoint's peak)."""
        spec, s = self.spec, self.schedule
        grid, mask_grid = spec.grid, spec.mask_grid
        return {"steps_per_epoch": s.steps_per_epoch, "total_steps": s.total_steps,
                "warmup_steps": s.warmup_steps, "lr": s.lr if lr is None else lr,
                "warmup_rule": s.warmup_rule,
                "effective_batch": self.global_batch * spec.train.accum_steps,
                "world_size": self.world_size, "grid": list(grid), "tokens": math.prod(grid),
                "mask_grid": list(mask_grid), "masked_tokens": spec.mask.num_masked(mask_grid),
                "decoder_targets": decoder_targets(spec.mask, mask_grid),
                "resolution_schedule": resolution.describe(self.feeds[0].shape_at, spec.model,
                                                           spec.mask),
                "dataset_items": sum(len(f.source.dataset) for f in self.feeds),
                "sources": {f.source.name: len(f.source.dataset) for f in self.feeds},
                "steps_per_epoch_by_source": self.steps_per_epoch_by_source,
                **spec.modality.derived(spec.data),  # the modality's word on its data
                "decoder_embed_dim": spec.model.decoder_embed_dim,
                "encoder_params": params["encoder"], "decoder_params": params["decoder"],
                **self.flops(),
                "precision": precision, "precision_reason": reason, "compile": compile,
                "run_dir": str(run_dir(spec))}


def _sample_flops(spec: RunSpec, shape: tuple[int, ...]) -> dict[str, float]:
    """One sample's forward GFLOPs (``mim/models/flops.py``) under a mask of the run's policy
    (its count is every mask's)."""
    mask = spec.mask(spec.mask_grid, torch.Generator().manual_seed(0))  # [L]
    flops = forward_flops(spec.model, shape, mask, decoder_targets(spec.mask, spec.mask_grid))
    return {key: round(value, 6) for key, value in flops.items()}


def plan(spec: RunSpec, world_size: int) -> Plan:
    """The plan of a run of ``spec`` on ``world_size`` processes."""
    t = spec.train
    found = sources(spec)
    fed = feeds(spec, found, world_size)
    epoch, by_source = epoch_steps(fed, spec.seed, world_size, t.accum_steps)
    steps = schedule(spec, epoch, t.batch_size * world_size)
    fed[0].shape_at = resolution.plan(resolution.stage_shapes(spec), steps.total_steps,
                                      fed[0].items * world_size * t.accum_steps)
    return Plan(spec, world_size, found, fed, steps, by_source)


def sources(spec: RunSpec) -> list[Source]:
    """The run's data sources (one unless the modality mixes several); data errors are config
    errors, raised before anything is written."""
    modality = spec.modality
    try:
        if modality.sources is not None:
            return modality.sources(spec.data)
        return [Source(modality.name, modality.build_dataset(spec.data),
                       tuple(modality.sample_shape(spec.data)), None, 1.0,
                       modality.views(spec.data))]
    except FileNotFoundError as exc:  # a data.root that is missing or holds no usable files
        raise ConfigError(str(exc)) from None


def _mask_grid(spec: RunSpec, source: Source, policy: Any) -> tuple[int, ...]:
    """The grid a source's masks are drawn on: the run's, checked by validation, for a source
    of the run's sample shape and mask; another's (OmniMAE's images) checked here."""
    if source.mask is None and source.sample_shape == tuple(spec.modality.sample_shape(
            spec.data)):
        return spec.mask_grid
    try:
        tokens, grid = token_grids(spec.model, source.sample_shape)
        policy.check(grid)
        check_decoder_grid(spec.model, tokens, policy)  # model.decoder_window's windows
    except ValueError as exc:  # MaskConfigError included
        raise ConfigError(f"{exc} (source '{source.name}')") from None
    return grid


def feeds(spec: RunSpec, found: list[Source], world_size: int) -> list[Feed]:
    """Per source: the mask on its grid, the items per process and micro-step, and the items of
    one pass (all ranks, cut to whole global batches)."""
    out = []
    # progressive resolution: one source only (a modality mixing several sets no schedule)
    grids = spec.stage_grids if len(found) == 1 else {}
    for source in found:
        policy = source.mask or spec.mask
        grid = _mask_grid(spec, source, policy)
        if spec.train.batch_size % source.views:
            raise ConfigError(f"train.batch_size: {spec.train.batch_size} is not a multiple of "
                              f"the {source.views} views per item (data.repeat)")
        feed = Feed(source, MaskingCollate(policy, grid, grids, source.dataset.nodata,
                                             len(source.sample_shape)),
                    spec.train.batch_size // source.views)
        try:
            feed.per_epoch(world_size)
        except ValueError as exc:  # a global batch larger than the dataset
            raise ConfigError(f"{exc} (source '{source.name}')" if len(found) > 1
                              else str(exc)) from None
        out.append(feed)
    return out


def schedule(spec: RunSpec, steps_per_epoch: int, global_batch: int) -> Schedule:
    """Steps, warmup and the learning rate (MAE: lr = blr x effective batch / 256).

    The warmup is ``optim.warmup_steps`` when set; else, where ``train.max_steps`` sets the
    run's length, the share of it that ``optim.warmup_epochs`` is of ``train.epochs`` (MAE: 40
    of 800, 5 %), so a short run does not spend itself warming up and an extended one keeps its
    peak where it was; else ``optim.warmup_epochs`` epochs."""
    t, o = spec.train, spec.optim
    total = t.max_steps or t.epochs * steps_per_epoch
    if o.warmup_steps is not None:
        warmup, rule = o.warmup_steps, "optim.warmup_steps"
    elif t.max_steps:
        warmup = round(total * o.warmup_epochs / t.epochs)
        rule = (f"optim.warmup_epochs / train.epochs ({o.warmup_epochs:g} / {t.epochs}) of "
                "train.max_steps")
    else:
        warmup, rule = round(o.warmup_epochs * steps_per_epoch), "optim.warmup_epochs"
    if warmup > total - 1:
        warmup, rule = max(total - 1, 0), f"{rule}, cut to the run's steps - 1"
    lr = o.lr or effective_lr(o.blr, global_batch * t.accum_steps)
    return Schedule(steps_per_epoch, total, warmup, lr, rule)
