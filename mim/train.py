"""``train(spec)``: build everything from a validated config and run the loop.

Every launcher calls this same function in every process it starts.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from mim.config.run_spec import RunSpec
from mim.config.errors import ConfigError
from mim.config.migrate import current
from mim.config.history import (append_history, as_resumed, check_resume, history_record,
                                write_config)
from mim.data import sample_seed
from mim.engine.backends.base import Backend
from mim.engine.checkpoint import Checkpoints
from mim.engine.loop import LoopSettings, LoopState, Trainer, picture_writer
from mim.engine.metrics import RunLogger
from mim.engine.reshape import note_reshape, shape_of
from mim.engine.optim import build_adamw, cosine_schedule
from mim.models.factory import build_model
from mim.masking import decoder_targets
from mim.models.model import parameter_counts
from mim.plan import Plan, plan
from mim.registry import BACKENDS
from mim.rundir import check_run_dir, claim_run_dir, run_dir, set_aside
from mim.seeding import seed_all
from mim.data.stream import SourceRecords, drawn, make_stream

log = logging.getLogger("mim")


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
        saved = current(client.get("config"))  # with today's keys (mim/config/migrate.py)
        config, ignored = as_resumed(saved, config)
        t = spec.train  # effective batches: the checkpoint's (its samples per step), and ours
        changed, forced = check_resume(
            saved, config, spec.run.resume, latest,
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
    """Build the run (its plan, model, directory, optimiser, backend), resume, fit."""
    backend: Backend = BACKENDS.get(spec.backend.name)(
        precision=spec.train.precision, accum_steps=spec.train.accum_steps,
        clip_grad=spec.train.clip_grad, compile=spec.train.compile,
        batch_size=spec.train.batch_size, config=spec.backend.config)
    _setup_logging(None, backend.is_main)  # messages from building the data reach stderr
    for note in spec.notes:
        log.info("%s", note)
    run = plan(spec, backend.world_size)
    directory = run_dir(spec)
    # every rank checks before any writes (a refused folder stops them all, none waits at a
    # barrier); what can still refuse the run (model.init) comes before anything is written
    check_run_dir(directory)
    model = _model(spec, run, directory)
    backend.barrier()
    if backend.is_main:  # then the main rank claims it: a check after the claim began sees half
        _claim(directory, spec.run.resume == "never")
    backend.barrier()
    _setup_logging(directory, backend.is_main)
    _log_data(spec, backend, run)
    built = _build(spec, backend, run, model)
    checkpoints = Checkpoints(directory / "checkpoints", spec.train.keep_last)
    data = {f.source.name: f.source.dataset.identity() for f in run.feeds}
    resumed = _resume(spec, backend, checkpoints, data)
    derived = run.derived(built.params, *backend.precision_and_reason, backend.compile,
                          _resumed_lr(built.scheduler, run.schedule.lr, resumed.state))
    if backend.is_main:
        (directory / "derived.json").write_text(json.dumps(derived, indent=2) + "\n")
        log.info("run directory: %s", directory)
        log.info("derived: %s", json.dumps(derived))
    trainer = _trainer(spec, backend, run, built, checkpoints, resumed, data, directory)
    try:
        trainer.fit()
    finally:
        trainer.logger.close()
    state = resumed.state
    if backend.is_main:
        log.info("done: %d steps, %d unreadable items skipped, %d padded; run directory: %s",
                 state.step, state.skipped, state.padded, directory)
    return directory


def _model(spec: RunSpec, run: Plan, directory: Path) -> torch.nn.Module:
    """The model, with ``model.init``'s weights unless the run resumes its own checkpoint."""
    seed_all(spec.seed)  # identical initial weights on every rank
    model = build_model(spec.model, in_chans=run.in_chans, nodata=run.nodata)
    if spec.model.init:  # starting weights, before the backend places (or shards) the model
        from mim.init import init_model  # reads weight formats: only when asked

        init_model(model, spec.model, None if spec.run.resume == "never" else
                   Checkpoints(directory / "checkpoints").latest(),
                   spec.modality.derived(spec.data).get("bands"))
    return model



def _data_source(spec: RunSpec) -> str:
    """Where the run's items come from, for its log: the root, a list file, or the demo."""
    if spec.modality.uses_builtin_data(spec.data):
        return "built-in demo"
    return str(getattr(spec.data, "root", None) or getattr(spec.data, "list_file", None))

def _log_data(spec: RunSpec, backend: Backend, run: Plan) -> None:
    log.info("precision: %s (%s)", *backend.precision_and_reason)
    for feed in run.feeds:
        policy, grid = feed.collate.policy, feed.collate.grid
        targets = decoder_targets(policy, grid)
        log.info("data: %s, %d items (%s), grid %s, %d masked%s", feed.source.name,
                 len(feed.source.dataset), _data_source(spec),
                 list(grid), policy.num_masked(grid),
                 "" if targets is None else f", the decoder reconstructs and scores {targets}")


@dataclass
class Built:
    runner: torch.nn.Module  # the model as the backend placed and wrapped it
    model: torch.nn.Module
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: dict[str, int]  # encoder and decoder parameters


def _build(spec: RunSpec, backend: Backend, run: Plan, model: torch.nn.Module) -> Built:
    """AdamW and the warmup-cosine schedule of the plan, and the model placed by the backend."""
    s = run.schedule
    optimizer = build_adamw(model, s.lr, tuple(spec.optim.betas), spec.optim.weight_decay,
                            backend.device.type)
    scheduler = cosine_schedule(optimizer, s.warmup_steps, s.total_steps,
                                spec.optim.min_lr / s.lr)
    params = parameter_counts(model)  # before setup: ZeRO-3 leaves each rank a shard
    return Built(backend.setup(model, optimizer, scheduler), model, scheduler, params)


def _resumed_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, planned: float,
                state: LoopState) -> float | None:
    """After a resume, LambdaLR's peak is the checkpoint's (said in the log where this config's
    batch gives another); None where it is the plan's."""
    restored = scheduler.base_lrs[0]
    if not state.step or np.isclose(restored, planned, rtol=1e-9, atol=0):
        return None
    log.info("learning rate: %g, the checkpoint's (this config's batch gives %g; the "
             "schedule's warmup and length follow this config)", restored, planned)
    return restored


def _trainer(spec: RunSpec, backend: Backend, run: Plan, built: Built, checkpoints: Checkpoints,
             resumed: Resumed, data: dict[str, dict], directory: Path) -> Trainer:
    """The loop over the plan's stream, logging, pictures and checkpoints."""
    t, state, first = spec.train, resumed.state, run.feeds[0]
    dataset = first.source.dataset
    fixed = first.collate([(dataset[(i, seed)], seed)
                           for i in range(min(t.vis_samples, len(dataset)))
                           for seed in [sample_seed(spec.seed, -1, i, "vis")]])
    stream = make_stream(run.feeds, spec.seed, backend.rank, backend.world_size, t.num_workers,
                         backend.device.type == "cuda", timeout=t.timeout)
    logger = RunLogger(directory, backend.is_main, run.schedule.total_steps, state.step,
                       spec.trackers, resumed.config, resumed.history)
    if len(run.feeds) > 1:  # each record says which source fed its step
        micro = state.drawn.get("micro_steps", state.step * t.accum_steps)
        logger = SourceRecords(logger, run.feeds, spec.seed, t.accum_steps,
                               micro - state.step * t.accum_steps, state.step)
    settings = LoopSettings(run.schedule.total_steps, t.timeout, run.global_batch, t.accum_steps,
                            t.log_every, t.ckpt_every, t.vis_every, run.samples_per_epoch)
    return Trainer(built.runner, built.model, backend, stream, settings, checkpoints, logger,
                   state, picture_writer(spec.modality, spec.data, fixed, directory / "pictures",
                                         logger, backend.is_main),
                   {"config": resumed.config, "data": data, "history": resumed.history},
                   nonfinite=t.nonfinite, max_nonfinite_skips=t.max_nonfinite_skips,
                   max_unreadable=t.max_unreadable,
                   drawn=functools.partial(drawn, run.feeds, spec.seed, backend.world_size),
                   shape=shape_of(spec.backend.name, backend))
