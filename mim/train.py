"""``train(spec)``: build everything from a validated config and run the loop.

Every launcher calls this same function in every process it starts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from mim.config.compose import RunSpec, token_grid
from mim.config.errors import ConfigError
from mim.data import Batch, MaskingCollate, MimDataset, SeededView, StreamSampler, sample_seed
from mim.engine.checkpoint import Checkpoints
from mim.engine.loop import LoopSettings, LoopState, Trainer, picture_writer
from mim.engine.metrics import RunLogger
from mim.engine.optim import build_adamw, cosine_schedule, effective_lr
from mim.models import build_model
from mim.registry import BACKENDS

log = logging.getLogger("mim")


def config_hash(spec: RunSpec) -> str:
    """Identifies a run: the same command (same config) maps to the same run directory."""
    tree = OmegaConf.to_container(spec.raw, resolve=True)
    tree.pop("run", None)
    tree.pop("launcher", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:8]


def run_dir(spec: RunSpec) -> Path:
    if spec.run.dir:
        return Path(spec.run.dir).expanduser().resolve()
    return (Path(spec.run.root) / spec.modality.name / spec.model.name / config_hash(spec)).resolve()


def _init_distributed() -> bool:
    """Join the process group torchrun (or a launcher) describes; True if this call created it."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def _setup_logging(directory: Path, is_main: bool) -> None:
    root = logging.getLogger("mim")
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    stream.setLevel(logging.INFO if is_main else logging.WARNING)
    root.addHandler(stream)
    if is_main:
        file = logging.FileHandler(directory / "train.log")
        file.setFormatter(fmt)
        root.addHandler(file)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(spec: RunSpec) -> Path:
    """Pretrain as configured; returns the run directory."""
    created = _init_distributed()
    try:
        return _train(spec)
    finally:
        if created:
            dist.destroy_process_group()


def _items_per_batch(spec: RunSpec) -> int:
    """Items drawn per process and micro-step: the batch counts clips, K views per item."""
    views = spec.modality.views(spec.data)
    if spec.train.batch_size % views:
        raise ConfigError(f"train.batch_size: {spec.train.batch_size} is not a multiple of the "
                          f"{views} views per item (data.repeat)")
    return spec.train.batch_size // views


def _dataset(spec: RunSpec, world_size: int) -> tuple[MimDataset, StreamSampler]:
    """The dataset and a probe of its order; data errors are config errors, raised early."""
    try:
        dataset = spec.modality.build_dataset(spec.data)
        probe = StreamSampler(len(dataset), spec.seed, _items_per_batch(spec), 0, world_size)
    except FileNotFoundError as exc:  # a data.root that is missing or holds no usable files
        raise ConfigError(str(exc)) from None
    except ValueError as exc:  # a global batch larger than the dataset
        raise ConfigError(str(exc)) from None
    return dataset, probe


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float


def _schedule(spec: RunSpec, items_per_epoch: int, global_items: int, global_batch: int) -> Schedule:
    """Steps, warmup and the learning rate (MAE: lr = blr x effective batch / 256)."""
    t, o = spec.train, spec.optim
    steps_per_epoch = max(1, items_per_epoch // global_items // t.accum_steps)
    total = t.max_steps or t.epochs * steps_per_epoch
    warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_epochs *
                                                                     steps_per_epoch)
    lr = o.lr or effective_lr(o.blr, global_batch * t.accum_steps)
    return Schedule(steps_per_epoch, total, min(warmup, max(total - 1, 0)), lr)


def _resume(spec: RunSpec, backend, checkpoints: Checkpoints) -> LoopState:
    """Load the newest complete checkpoint unless told not to; a fresh state otherwise."""
    latest = checkpoints.latest()
    if spec.run.resume == "must" and latest is None:
        raise ConfigError(f"run.resume: 'must' but {checkpoints.root} holds no checkpoint")
    if latest is None or spec.run.resume == "never":
        return LoopState()
    state = LoopState(**backend.load(latest)["loop"])
    state.restore_rng()
    log.info("resumed from %s (step %d, %d samples)", latest, state.step, state.samples)
    return state


def _loader(spec: RunSpec, dataset: MimDataset, collate: MaskingCollate, items: int,
            backend) -> Callable[[int], Iterator[Batch]]:
    """A function giving the batch stream from a data position (items consumed)."""
    view = SeededView(dataset)
    workers = spec.train.num_workers

    def batches(start: int) -> Iterator[Batch]:
        sampler = StreamSampler(len(dataset), spec.seed, items, backend.rank,
                                backend.world_size, start)
        return iter(DataLoader(view, batch_size=items, sampler=sampler, collate_fn=collate,
                               num_workers=workers, persistent_workers=workers > 0,
                               pin_memory=backend.device.type == "cuda"))

    return batches


def _train(spec: RunSpec) -> Path:
    backend_params = {k: v for k, v in spec.backend.items() if k != "name"}
    backend = BACKENDS.get(spec.backend["name"])(
        precision=spec.train.precision, accum_steps=spec.train.accum_steps,
        clip_grad=spec.train.clip_grad, compile=spec.train.compile, **backend_params)
    grid = token_grid(spec)
    dataset, sampler_probe = _dataset(spec, backend.world_size)
    directory = run_dir(spec)
    if backend.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    backend.barrier()
    _setup_logging(directory, backend.is_main)
    log.info("data: %d items (%s)", len(dataset), spec.data.root or "built-in demo data")

    sample_shape = tuple(spec.modality.sample_shape(spec.data))  # (C, *spatial)
    _seed_all(spec.seed)  # identical initial weights on every rank
    model = build_model(spec.model, in_chans=sample_shape[0])
    t = spec.train
    global_batch = t.batch_size * backend.world_size  # clips per micro-step, all ranks
    items = _items_per_batch(spec)
    global_items = items * backend.world_size
    plan = _schedule(spec, sampler_probe.per_epoch, global_items, global_batch)
    optimizer = build_adamw(model, plan.lr, tuple(spec.optim.betas), spec.optim.weight_decay)
    scheduler = cosine_schedule(optimizer, plan.warmup_steps, plan.total_steps,
                                spec.optim.min_lr / plan.lr)
    runner = backend.setup(model, optimizer, scheduler)
    checkpoints = Checkpoints(directory / "checkpoints", t.keep_last)
    state = _resume(spec, backend, checkpoints)

    derived = {**asdict(plan), "effective_batch": global_batch * t.accum_steps,
               "grid": list(grid), "tokens": int(np.prod(grid)),
               "masked_tokens": spec.mask.num_masked(grid), "dataset_items": len(dataset),
               "decoder_embed_dim": spec.model.decoder_embed_dim,
               "encoder_params": sum(p.numel() for n, p in model.named_parameters()
                                     if not n.startswith(("decoder", "mask_token"))),
               "world_size": backend.world_size}
    if backend.is_main:
        OmegaConf.save(spec.raw, directory / "config.yaml", resolve=True)
        (directory / "derived.json").write_text(json.dumps(derived, indent=2) + "\n")
        log.info("run directory: %s", directory)
        log.info("derived: %s", json.dumps(derived))

    collate = MaskingCollate(spec.mask, grid)
    fixed = collate([(dataset[(i, seed)], seed) for i in range(min(t.vis_samples, len(dataset)))
                     for seed in [sample_seed(spec.seed, -1, i, "vis")]])
    logger = RunLogger(directory, backend.is_main, plan.total_steps, state.step)
    settings = LoopSettings(plan.total_steps, global_batch, global_items, t.accum_steps,
                            t.log_every, t.ckpt_every, t.vis_every, sampler_probe.per_epoch)
    trainer = Trainer(runner, model, backend, _loader(spec, dataset, collate, items, backend),
                      settings, checkpoints, logger, state,
                      picture_writer(spec.modality, spec.data, fixed, directory / "pictures",
                                     logger),
                      OmegaConf.to_container(spec.raw, resolve=True))
    try:
        trainer.fit()
    finally:
        logger.close()
    if backend.is_main:
        log.info("done: %d steps, %d unreadable items skipped; run directory: %s",
                 state.step, state.skipped, directory)
    return directory
