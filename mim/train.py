"""``train(spec)``: build everything from a validated config and run the loop.

Every launcher calls this same function in every process it starts.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from mim.config.compose import RunSpec
from mim.config.errors import ConfigError
from mim.config.history import (append_history, as_resumed, check_resume, history_record,
                                write_config)
from mim.data import MaskingCollate, StreamSampler, sample_seed
from mim.engine.backend import Backend
from mim.engine.checkpoint import Checkpoints
from mim.engine.loop import LoopSettings, LoopState, Trainer, picture_writer
from mim.engine.metrics import RunLogger
from mim.engine.reshape import note_reshape, shape_of
from mim.engine.optim import build_adamw, cosine_schedule, effective_lr
from mim.factory import build_model, token_grids
from mim.masking import decoder_targets
from mim.model import is_decoder
from mim import resolution
from mim.registry import BACKENDS
from mim.rundir import check_run_dir, claim_run_dir, set_aside
from mim.seeding import seed_all
from mim.stream import Feed, Source, SourceRecords, drawn, epoch_steps, make_stream

log = logging.getLogger("mim")


def config_hash(spec: RunSpec) -> str:
    """Identifies a run: the same command (same config) maps to the same run directory."""
    tree = OmegaConf.to_container(spec.raw, resolve=True)
    tree.pop("run", None)
    tree.pop("launcher", None)
    tree.pop("tracker", None)  # where a run reports, not what it computes
    if tree.get("model", {}).get("init") is None:  # added later: runs without it keep their dir
        tree.get("model", {}).pop("init", None)
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


class _Held(logging.Handler):
    """Keeps the records logged before the run directory exists (building the data: damaged
    shards, rebuilt indexes, skipped links), for train.log once it is known."""

    limit = 10_000  # records kept; a flood of per-file warnings is cut, said in train.log

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.limit:
            self.records.append(record)
        else:
            self.dropped += 1


def _setup_logging(directory: Path | None, is_main: bool) -> None:
    """Log to stderr (non-main ranks: warnings only) and, on the main rank, to the run's
    train.log: until the directory is known into a holder, whose records the file then gets
    first, so train.log tells all the console told."""
    root = logging.getLogger("mim")
    root.setLevel(logging.INFO)
    root.propagate = False
    held = next((h for h in root.handlers if isinstance(h, _Held)), None)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    stream.setLevel(logging.INFO if is_main else logging.WARNING)
    root.addHandler(stream)
    if not is_main:
        return
    if directory is None:
        root.addHandler(_Held())
        return
    file = logging.FileHandler(directory / "train.log")
    file.setFormatter(fmt)
    for record in held.records if held is not None else []:
        file.handle(record)
    if held is not None and held.dropped:
        file.handle(root.makeRecord(root.name, logging.WARNING, __file__, 0, "%d more records "
                                    "logged before the run directory existed are not in this "
                                    "file (the console showed them)", (held.dropped,), None))
    root.addHandler(file)


def train(spec: RunSpec) -> Path:
    """Pretrain as configured; returns the run directory."""
    created = _init_distributed()
    try:
        return _train(spec)
    finally:
        if created:
            dist.destroy_process_group()


def _sources(spec: RunSpec) -> list[Source]:
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


def _feeds(spec: RunSpec, sources: list[Source], world_size: int) -> list[Feed]:
    """Per source: the mask on its grid and the items per process and micro-step."""
    feeds = []
    # progressive resolution: one source only (a modality mixing several sets no schedule)
    grids = resolution.check(spec.model, spec.mask, resolution.stage_shapes(spec),
                             sources[0].sample_shape) if len(sources) == 1 else {}
    for source in sources:
        policy = source.mask or spec.mask
        try:
            _, grid = token_grids(spec.model, source.sample_shape)  # the mask grid
            policy.check(grid)
        except ValueError as exc:  # MaskConfigError included
            raise ConfigError(f"{exc} (source '{source.name}')") from None
        if spec.train.batch_size % source.views:
            raise ConfigError(f"train.batch_size: {spec.train.batch_size} is not a multiple of "
                              f"the {source.views} views per item (data.repeat)")
        items = spec.train.batch_size // source.views
        try:
            StreamSampler(len(source.dataset), spec.seed, items, 0, world_size)
        except ValueError as exc:  # a global batch larger than the dataset
            raise ConfigError(f"{exc} (source '{source.name}')" if len(sources) > 1
                              else str(exc)) from None
        feeds.append(Feed(source, MaskingCollate(policy, grid, grids), items))
    return feeds


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float
    warmup_rule: str = ""  # which setting gave warmup_steps (derived.json says it)


def _schedule(spec: RunSpec, steps_per_epoch: int, global_batch: int) -> Schedule:
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


@dataclass
class Resumed:
    """Where the run goes on from: the loop state, the config it follows (what config.yaml and
    every checkpoint hold) and its history of starts and resumes, this one last."""

    state: LoopState
    config: dict
    history: list[dict]


def _resume(spec: RunSpec, backend: Backend, checkpoints: Checkpoints,
            data: dict[str, dict]) -> Resumed:
    """Load the newest complete checkpoint unless told not to (a fresh state otherwise), refuse
    a config or data (``data``: each source's identity) that would change the run
    (``mim/config/history.py`` says which keys), then record the config the run goes on with:
    ``config.yaml`` and a line of ``config_history.jsonl``."""
    latest = checkpoints.latest()
    if spec.run.resume == "must" and latest is None:
        raise ConfigError(f"run.resume: 'must' but {checkpoints.root} holds no checkpoint")
    config = OmegaConf.to_container(spec.raw, resolve=True)
    if latest is None or spec.run.resume == "never":
        state, history, record = LoopState(), [], history_record("start", 0)
    else:
        client = backend.load(latest)
        state = LoopState(**client["loop"])
        config, ignored = as_resumed(client.get("config"), config)
        t = spec.train  # effective batches: the checkpoint's (its samples per step), and ours
        changed, forced = check_resume(
            client.get("config"), config, spec.run.resume, latest,
            state.samples // state.step if state.step and not state.samples % state.step else None,
            t.batch_size * t.accum_steps * backend.world_size, client.get("data"), data)
        state.restore_rng()
        log.info("resumed from %s (step %d, %d samples)", latest, state.step, state.samples)
        note_reshape(latest, client, shape_of(spec.backend.name, backend))
        history = list(client.get("history") or [])
        record = history_record("resume-force" if forced else "resume", state.step, changed,
                                ignored)
    if backend.is_main:
        write_config(config, checkpoints.root.parent)
        append_history(checkpoints.root.parent, config, record)
    return Resumed(state, config, [*history, record])


def _claim(directory: Path, start_over: bool) -> None:
    """Make ``directory`` the run's (its marker); to start over (``run.resume=never``) in a
    folder holding an earlier run, set that run aside first, said in one line."""
    claim_run_dir(directory)
    moved = set_aside(directory) if start_over else None
    if moved is not None:
        log.info("run.resume=never: the earlier run in %s (its checkpoints, metrics, tracker "
                 "ids and history) moved to %s; it stays readable there", directory, moved)


def _train(spec: RunSpec) -> Path:
    backend: Backend = BACKENDS.get(spec.backend.name)(
        precision=spec.train.precision, accum_steps=spec.train.accum_steps,
        clip_grad=spec.train.clip_grad, compile=spec.train.compile,
        batch_size=spec.train.batch_size, config=spec.backend.config)
    grid, mask_grid = spec.grid, spec.mask_grid  # checked by validate
    _setup_logging(None, backend.is_main)  # messages from building the data reach stderr
    for note in spec.notes:
        log.info("%s", note)
    sources = _sources(spec)
    in_chans = sources[0].sample_shape[0]
    feeds = _feeds(spec, sources, backend.world_size)
    directory = run_dir(spec)
    # every rank checks before any writes (a refused folder stops them all, none waits at a
    # barrier); what can still refuse the run (model.init) comes before anything is written
    check_run_dir(directory)
    seed_all(spec.seed)  # identical initial weights on every rank
    model = build_model(spec.model, in_chans=in_chans)
    if spec.model.init:  # starting weights, before the backend places (or shards) the model
        from mim.init import init_model  # reads weight formats: only when asked

        init_model(model, spec.model, None if spec.run.resume == "never" else
                   Checkpoints(directory / "checkpoints").latest())
    backend.barrier()
    if backend.is_main:  # then the main rank claims it: a check after the claim began sees half
        _claim(directory, spec.run.resume == "never")
    backend.barrier()
    _setup_logging(directory, backend.is_main)
    log.info("precision: %s (%s)", *backend.precision_and_reason)
    for feed in feeds:
        policy, feed_grid = feed.collate.policy, feed.collate.grid
        targets = decoder_targets(policy, feed_grid)
        log.info("data: %s, %d items (%s), grid %s, %d masked%s", feed.source.name,
                 len(feed.source.dataset), getattr(spec.data, "root", None) or "built-in demo",
                 list(feed_grid), policy.num_masked(feed_grid),
                 "" if targets is None else f", the decoder reconstructs and scores {targets}")

    t = spec.train
    global_batch = t.batch_size * backend.world_size  # clips per micro-step, all ranks
    first = feeds[0]
    epoch, by_source = epoch_steps(feeds, spec.seed, backend.world_size, t.accum_steps)
    plan = _schedule(spec, epoch, global_batch)
    first.shape_at = resolution.plan(resolution.stage_shapes(spec), plan.total_steps,
                                     first.items * backend.world_size * t.accum_steps)
    optimizer = build_adamw(model, plan.lr, tuple(spec.optim.betas), spec.optim.weight_decay,
                            backend.device.type)
    scheduler = cosine_schedule(optimizer, plan.warmup_steps, plan.total_steps,
                                spec.optim.min_lr / plan.lr)
    # counted before setup: ZeRO-3 leaves each rank a shard of every parameter
    encoder_params = sum(p.numel() for n, p in model.named_parameters() if not is_decoder(n))
    runner = backend.setup(model, optimizer, scheduler)
    checkpoints = Checkpoints(directory / "checkpoints", t.keep_last)
    data = {f.source.name: f.source.dataset.identity() for f in feeds}
    resumed = _resume(spec, backend, checkpoints, data)
    state = resumed.state
    restored = scheduler.base_lrs[0]  # after a resume, LambdaLR's peak is the checkpoint's
    if state.step and not np.isclose(restored, plan.lr, rtol=1e-9, atol=0):
        log.info("learning rate: %g, the checkpoint's (this config's batch gives %g; the "
                 "schedule's warmup and length follow this config)", restored, plan.lr)
        plan = replace(plan, lr=restored)

    derived = {**asdict(plan), "effective_batch": global_batch * t.accum_steps,
               "grid": list(grid), "tokens": int(np.prod(grid)),
               "mask_grid": list(mask_grid),
               "masked_tokens": spec.mask.num_masked(mask_grid),
               "decoder_targets": decoder_targets(spec.mask, mask_grid),
               "resolution_schedule": resolution.describe(first.shape_at, spec.model, spec.mask),
               "dataset_items": sum(len(f.source.dataset) for f in feeds),
               "sources": {f.source.name: len(f.source.dataset) for f in feeds},
               "steps_per_epoch_by_source": by_source,
               "decoder_embed_dim": spec.model.decoder_embed_dim,
               "encoder_params": encoder_params,
               "world_size": backend.world_size, "precision": backend.precision,
               "compile": backend.compile}
    if backend.is_main:
        (directory / "derived.json").write_text(json.dumps(derived, indent=2) + "\n")
        log.info("run directory: %s", directory)
        log.info("derived: %s", json.dumps(derived))

    dataset = first.source.dataset
    fixed = first.collate([(dataset[(i, seed)], seed)
                           for i in range(min(t.vis_samples, len(dataset)))
                           for seed in [sample_seed(spec.seed, -1, i, "vis")]])
    stream = make_stream(feeds, spec.seed, backend.rank, backend.world_size, t.num_workers,
                         backend.device.type == "cuda", timeout=t.timeout)
    logger = RunLogger(directory, backend.is_main, plan.total_steps, state.step, spec.trackers,
                       resumed.config, resumed.history)
    if len(feeds) > 1:  # each record says which source fed its step
        micro = state.drawn.get("micro_steps", state.step * t.accum_steps)
        logger = SourceRecords(logger, feeds, spec.seed, t.accum_steps,
                               micro - state.step * t.accum_steps, state.step)
    samples_per_epoch = sum(StreamSampler(len(f.source.dataset), spec.seed, f.items, 0,
                                          backend.world_size).per_epoch * f.source.views
                            for f in feeds)  # samples in one pass over every source
    settings = LoopSettings(plan.total_steps, t.timeout, global_batch, t.accum_steps, t.log_every,
                            t.ckpt_every, t.vis_every, samples_per_epoch)
    trainer = Trainer(runner, model, backend, stream, settings, checkpoints, logger, state,
                      picture_writer(spec.modality, spec.data, fixed, directory / "pictures",
                                     logger, backend.is_main),
                      {"config": resumed.config, "data": data, "history": resumed.history},
                      nonfinite=t.nonfinite, max_nonfinite_skips=t.max_nonfinite_skips,
                      max_unreadable=t.max_unreadable,
                      drawn=functools.partial(drawn, feeds, spec.seed, backend.world_size),
                      shape=shape_of(spec.backend.name, backend))
    try:
        trainer.fit()
    finally:
        logger.close()
    if backend.is_main:
        log.info("done: %d steps, %d unreadable items skipped, %d padded; run directory: %s",
                 state.step, state.skipped, state.padded, directory)
    return directory
