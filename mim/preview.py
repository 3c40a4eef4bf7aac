"""``mim train ... --cfg``: the composed config and the values a run would derive from it.

Nothing is trained, and nothing written but the indexes of shards (into mim's cache, or the
folder of mim's own pack, never a user's data folder): the data sources are indexed (their
lengths give the steps per epoch), the model is built on the meta device (parameter counts
without memory), and the backend is asked for its precision. The world size is the launcher's
(``compose.world_size``), since no process group exists yet.
"""
from __future__ import annotations

import json
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mim.config.compose import RunSpec, world_size
from mim.config.overrides import plain
from mim.stream import epoch_steps
from mim.factory import build_model
from mim.masking import decoder_targets
from mim.model import is_decoder
from mim.registry import BACKENDS
from mim import resolution
from mim.train import _feeds, _schedule, _sources, run_dir


def derived(spec: RunSpec) -> dict[str, Any]:
    """The values ``derived.json`` of a run of ``spec`` holds, computed without a run."""
    t = spec.train
    world = world_size(spec)
    sources = _sources(spec)
    feeds = _feeds(spec, sources, world)
    epoch, by_source = epoch_steps(feeds, spec.seed, world, t.accum_steps)
    global_batch = t.batch_size * world
    plan = _schedule(spec, epoch, global_batch)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(spec.model, in_chans=sources[0].sample_shape[0])
    params = {"encoder": 0, "decoder": 0}
    for name, p in model.named_parameters():
        params["decoder" if is_decoder(name) else "encoder"] += p.numel()
    backend = BACKENDS.get(spec.backend.name)(
        precision=t.precision, accum_steps=t.accum_steps, clip_grad=t.clip_grad,
        compile=t.compile, batch_size=t.batch_size, config=spec.backend.config)
    precision, reason = backend.precision_and_reason
    return {"lr": plan.lr, "steps_per_epoch": plan.steps_per_epoch,
            "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps,
            "warmup_rule": plan.warmup_rule,
            "effective_batch": global_batch * t.accum_steps, "world_size": world,
            "grid": list(spec.grid), "tokens": math.prod(spec.grid),
            "mask_grid": list(spec.mask_grid),
            "masked_tokens": spec.mask.num_masked(spec.mask_grid),
            "decoder_targets": decoder_targets(spec.mask, spec.mask_grid),
            "resolution_schedule": resolution.describe(
                resolution.plan(resolution.stage_shapes(spec), plan.total_steps,
                                feeds[0].items * world * t.accum_steps), spec.model, spec.mask),
            "sources": {f.source.name: len(f.source.dataset) for f in feeds},
            "steps_per_epoch_by_source": by_source,
            "encoder_params": params["encoder"], "decoder_params": params["decoder"],
            "precision": f"{precision} ({reason})", "compile": backend.compile,
            "run_dir": str(run_dir(spec))}


def config_text(raw: DictConfig, notes: tuple[str, ...] = ()) -> str:
    """The first part ``--cfg`` prints, before validation: what composition adapted, then the
    composed config as YAML (interpolations resolved)."""
    tree = plain(raw, "")  # a broken interpolation: a one-line ConfigError naming its key
    return "".join(f"# {note}\n" for note in notes) + f"# config\n{OmegaConf.to_yaml(tree)}"


def derived_text(spec: RunSpec) -> str:
    """The second part: the values a run of the validated ``spec`` derives."""
    values = "\n".join(f"{key}: {json.dumps(value)}" for key, value in derived(spec).items())
    return (f"# derived (nothing trained; nothing written but shard indexes, into mim's cache or "
            f"a mim pack)\n{values}")


def preview(spec: RunSpec) -> str:
    """The text ``--cfg`` prints for a valid config: the config, then the derived values."""
    return f"{config_text(spec.raw, spec.notes)}\n{derived_text(spec)}"
