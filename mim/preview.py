"""``mim train ... --cfg``: the composed config and the values a run would derive from it.

Nothing is trained, and nothing written but the indexes of shards (into mim's cache, or the
folder of mim's own pack, never a user's data folder): the data sources are indexed (their
lengths give the steps per epoch), the model is built on the meta device (parameter counts
without memory), and the backend is asked for its precision. The world size is the launcher's
(``compose.world_size``), since no process group exists yet.
"""
from __future__ import annotations

import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mim.config.compose import world_size
from mim.config.run_spec import RunSpec
from mim.config.overrides import plain
from mim.models.factory import build_model
from mim.models.model import parameter_counts
from mim.plan import plan
from mim.registry import BACKENDS


def derived(spec: RunSpec) -> dict[str, Any]:
    """The values ``derived.json`` of a run of ``spec`` holds (``Plan.derived``), computed
    without a run: the model on the meta device, the backend asked for its precision."""
    t = spec.train
    run = plan(spec, world_size(spec))
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(spec.model, in_chans=run.in_chans, nodata=run.nodata)
    backend = BACKENDS.get(spec.backend.name)(
        precision=t.precision, accum_steps=t.accum_steps, clip_grad=t.clip_grad,
        compile=t.compile, batch_size=t.batch_size, config=spec.backend.config)
    return run.derived(parameter_counts(model), *backend.precision_and_reason, backend.compile)


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
