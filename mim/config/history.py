"""Which config changes a resume may make, and the run's record of the configs it ran with.

A checkpoint carries the config its weights were trained with (``Trainer.save``'s client state,
``"config"``). A resume compares it with the new config, key by key (dotted paths; lists compared
whole), and refuses any difference outside the keys below unless ``run.resume=force``.

Never compared (they do not change what the weights become):
- ``run.*``, ``launcher.*``, ``backend.*``: where and how the processes run. A run resumes on
  another number of processes, ZeRO stage or backend (a Slurm job requeued onto fewer GPUs).
- logging, pictures, checkpoint cadence, loader workers, compilation, the step watchdog and
  the fault policy (``train.nonfinite``: skipping a NaN step after a stop is a recovery).
- ``model.init``: a resume takes the checkpoint's weights; the weights to start from are moot,
  so the resumed config keeps the checkpoint's value (``as_resumed``) and the record notes the
  one given as not applied.

Compared with a rule of their own:
- ``train.max_steps`` and ``train.epochs``: extending a run is a continuation, not another run,
  so they may change; the schedule's total then changes with them (the cosine's remaining
  steps are stretched or shortened), which the log states.
- ``train.batch_size`` and ``train.accum_steps``: the per-process batch. A change is accepted
  when the effective batch (batch x accumulation x processes: what the learning rate and the
  data order follow) stays the checkpoint's, as on a resume with twice the processes and half
  the batch; the checkpoint's effective batch is its samples per step.

Everything else (model, mask, data, optimiser, schedule, precision, seed, modality) is the run.
``run.resume=force`` goes on with such differences, except those in ``STATE_KEYS``: the
learning rate, betas and weight decay come back with the optimiser's state (torch's
``Optimizer.load_state_dict`` restores each group's hyperparameters, ``LambdaLR`` its base lr),
so the new value would be written to ``config.yaml`` but never used.
A key present on one side only (a setting added by another mim version) is reported in the log,
not refused.

The data is compared too: each checkpoint holds every source's ``MimDataset.identity()`` (item
count; for shards their names and sizes and the manifest's hash), since the data order follows
from it; other data is refused like a config change (``data_differences``), and ``force`` goes on.

The record: ``config.yaml`` (the config the weights now follow), one line of
``config_history.jsonl`` per start or resume (``history_record`` plus the whole config), and the
same records, oldest first, in every checkpoint (``"history"``), which exports and trackers show
(``history_lines``).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mim.config.errors import ConfigError

log = logging.getLogger("mim")

HISTORY = "config_history.jsonl"
IGNORED_SECTIONS = ("run", "launcher", "backend", "tracker")
IGNORED_KEYS = frozenset({
    "train.num_workers", "train.log_every", "train.ckpt_every", "train.keep_last",
    "train.vis_every", "train.vis_samples", "train.compile", "train.timeout",
    "train.nonfinite", "train.max_nonfinite_skips", "train.max_unreadable", "model.init",
    "model.activation_checkpointing"})  # recomputes activations: memory, not the result
LENGTH_KEYS = ("train.max_steps", "train.epochs")
BATCH_KEYS = ("train.batch_size", "train.accum_steps")
STATE_KEYS = ("optim.name", "optim.lr", "optim.blr", "optim.betas", "optim.weight_decay")
# keys a resume takes from the checkpoint whatever is given (``as_resumed``)
CHECKPOINT_KEYS = ("model.init",)
DATA_KEY = "data identity"  # how the data's differences are named (``data_differences``)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": leaf}`` (lists are leaves: compared whole)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _ignored(key: str) -> bool:
    return key.split(".", 1)[0] in IGNORED_SECTIONS or key in IGNORED_KEYS


def compare(saved: dict[str, Any], now: dict[str, Any], saved_batch: int | None,
            now_batch: int) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]],
                                     list[str]]:
    """``(refused, accepted, one_sided)``: the differing keys with (checkpoint, new) values
    that change the run, those a resume may change, and keys only one side has.
    ``saved_batch``: the checkpoint's effective batch (None if unknown); ``now_batch``: this
    run's."""
    a, b = flatten(saved), flatten(now)
    refused, accepted = {}, {}
    for key in sorted(a.keys() & b.keys()):
        if a[key] == b[key] or _ignored(key):
            continue
        if key in LENGTH_KEYS:
            accepted[key] = (a[key], b[key])
        elif key in BATCH_KEYS and saved_batch == now_batch:
            accepted[key] = (a[key], b[key])
        else:
            refused[key] = (a[key], b[key])
    if saved_batch is not None and saved_batch != now_batch and any(k in refused
                                                                    for k in BATCH_KEYS):
        refused["effective batch"] = (saved_batch, now_batch)
    one_sided = sorted(k for k in a.keys() ^ b.keys() if not _ignored(k))
    return refused, accepted, one_sided


def data_differences(saved: dict[str, Any] | None,
                     now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The differences between the data a checkpoint was trained on and this run's, both
    ``{source: dataset.identity()}`` (``MimDataset.identity``: item count, shards and sizes, a
    manifest's hash), under ``data identity.<source>.<key>``; a list (the shards) shown by its
    length and the entries one side lacks. Keys one side lacks (older mim) are not compared."""
    a, b = flatten(saved or {}, DATA_KEY), flatten(now, DATA_KEY)
    out = {}
    for key in sorted(a.keys() & b.keys()):
        old, new = a[key], b[key]
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):
            gone = [e for e in old if e not in new][:2]
            added = [e for e in new if e not in old][:2]
            old, new = (f"{len(old)} entries" + (f", {gone} not now" if gone else ""),
                        f"{len(new)} entries" + (f", {added} new" if added else ""))
        out[key] = (old, new)
    return out


def as_resumed(saved: dict[str, Any] | None,
               config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """(``config`` as the resumed run follows it, the given values it does not apply): the keys
    of ``CHECKPOINT_KEYS`` keep the checkpoint's value (``config.yaml`` then names the weights
    the run started from, not a ``model.init`` that was never loaded)."""
    out, ignored = json.loads(json.dumps(config)), {}
    if saved is None:
        return out, ignored
    a, b = flatten(saved), flatten(config)
    for key in CHECKPOINT_KEYS:
        if key in a and key in b and a[key] != b[key]:
            section, _, name = key.partition(".")
            out[section][name] = a[key]
            ignored[key] = (a[key], b[key])
    return out, ignored


def check_resume(saved: dict[str, Any] | None, config: dict[str, Any], mode: str,
                 checkpoint: Path, saved_batch: int | None, now_batch: int,
                 saved_data: dict[str, Any] | None = None,
                 now_data: dict[str, Any] | None = None) -> tuple[dict[str, tuple[Any, Any]],
                                                                  bool]:
    """The differences from the checkpoint's config ``saved`` (and data ``saved_data``) that the
    resume goes on with (the record of ``config_history.jsonl``), and whether
    ``run.resume=force`` (``mode``) was needed; a ``ConfigError`` naming the differing keys and
    both values when the resume would change the run without it."""
    if saved is None:  # written before checkpoints carried their config
        log.warning("resume: %s carries no config to compare with", checkpoint)
        return {}, False
    refused, accepted, one_sided = compare(saved, config, saved_batch, now_batch)
    if saved_data is None:
        log.info("resume: %s records no data identity (an older mim): not compared",
                 checkpoint)
    refused.update(data_differences(saved_data, now_data or {}))
    fixed = {k: v for k, v in refused.items() if k in STATE_KEYS}
    if fixed and mode == "force":
        raise ConfigError(f"run.resume=force: {describe(fixed)}: a resume restores these with "
                          f"the optimiser's state from {checkpoint}, so they cannot change; keep "
                          "the checkpoint's values or start a new run in another run.dir")
    if refused and mode != "force":
        raise ConfigError(f"run.resume: {checkpoint} was trained with another config: "
                          f"{describe(refused)}; rerun with the checkpoint's values, choose "
                          "another run.dir, or set run.resume=force to go on with the new ones")
    if one_sided:
        log.info("resume: keys only one of the checkpoint's and this config has (not "
                 "compared): %s", ", ".join(one_sided))
    if accepted:
        log.info("resume: goes on with %s (a continuation: the schedule's total and the "
                 "per-process batch follow the new values)", describe(accepted))
    if refused:
        log.warning("run.resume=force: going on from %s with %s (recorded in %s)", checkpoint,
                    describe(refused), HISTORY)
    return {**accepted, **refused}, bool(refused)


def describe(differences: dict[str, tuple[Any, Any]]) -> str:
    """``key: old -> new, ...`` on one line."""
    return ", ".join(f"{key}: {json.dumps(old)} -> {json.dumps(new)}"
                     for key, (old, new) in differences.items())


def write_config(config: DictConfig | dict[str, Any], directory: Path) -> None:
    """``config.yaml``, replaced in one rename (a reader never sees half of it)."""
    tmp = directory / f".config.yaml.{os.getpid()}.tmp"
    OmegaConf.save(config if isinstance(config, DictConfig) else OmegaConf.create(config), tmp,
                   resolve=True)
    os.replace(tmp, directory / "config.yaml")


def history_record(event: str, step: int, changed: dict[str, tuple[Any, Any]] | None = None,
                   not_applied: dict[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """One start of the run: when, how (start, resume, resume-force), at which step, what
    changed from the checkpoint's config (``key: [old, new]``) and the given values the resume
    did not apply (``key: [the checkpoint's, given]``, e.g. ``model.init``). Every checkpoint
    carries the run's list of them (``"history"``), oldest first; exports show it."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, "step": step,
              "changed": {k: list(v) for k, v in (changed or {}).items()}}
    if not_applied:
        record["not_applied"] = {k: list(v) for k, v in not_applied.items()}
    return record


def history_lines(history: list[dict[str, Any]]) -> list[str]:
    """The run's ``history_record``s, one line each: ``<time> step 300: resume-force
    (mask.ratio: 0.75 -> 0.5; not applied: model.init "b.pth", the checkpoint's "a.pth")``."""
    lines = []
    for record in history:
        notes = [describe({k: tuple(v) for k, v in record.get("changed", {}).items()})]
        notes += [f"not applied: {key} {json.dumps(given)}, the checkpoint's {json.dumps(kept)}"
                  for key, (kept, given) in record.get("not_applied", {}).items()]
        notes = [n for n in notes if n]
        lines.append(f"{record.get('time', '?')} step {record.get('step', '?')}: "
                     f"{record.get('event', '?')}" + (f" ({'; '.join(notes)})" if notes else ""))
    return lines


def append_history(directory: Path, config: dict[str, Any], record: dict[str, Any]) -> None:
    """One line of ``config_history.jsonl`` per start of the run: the ``history_record`` and
    the whole config the run goes on with."""
    with open(directory / HISTORY, "a") as file:
        file.write(json.dumps({**record, "config": config}) + "\n")
