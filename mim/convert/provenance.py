"""What an export can say about the run that made its weights (``Converted.run``).

A mim run or checkpoint carries its whole config and loop state; a foreign format only what it
records (MAE's ``args``, ViTMAE's ``mask_ratio``). Everything here is None where the source did
not say, so an export never claims a value it does not know.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mim.config.migrate import current
from mim.convert.common import Converted

# the sections of a run's config that describe how the weights were made (the model card's)
RUN_SECTIONS = ("model", "mask", "modality", "data", "optim", "train", "backend", "seed")
# ImageNet's statistics: both built-in pixel modalities' default, and timm's / MAE's
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _plain(value: Any) -> Any:
    """``value`` with only what JSON holds: a tensor or array inside (an RNG state) left out."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if _is_plain(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if _is_plain(v)]
    return value


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, dict, list, tuple))


def checkpoint_record(client: dict[str, Any]) -> dict[str, Any]:
    """``Converted.run`` from a mim checkpoint's client state: the run's config, the loop's
    counts (its RNG states and data position serve a resume, not a reader), and the run's
    history of starts and resumes where the checkpoint has one. JSON only: exports write it."""
    loop = client.get("loop") or {}
    record = {"config": current(_plain(client.get("config") or {})),
              "loop": {k: v for k, v in loop.items() if isinstance(v, (int, float, str, bool))}}
    if isinstance(client.get("history"), list):
        record["history"] = [h for h in _plain(client["history"]) if isinstance(h, dict)]
    return record


@dataclass
class RunFacts:
    modality: str | None = None
    mask: dict[str, Any] = field(default_factory=dict)  # the mask section: name, ratio, ...
    mean: list[float] | None = None  # the run's input normalisation, None if not recorded
    std: list[float] | None = None
    steps: int | None = None
    samples: int | None = None
    sections: dict[str, Any] = field(default_factory=dict)  # RUN_SECTIONS found in the config
    # starts and resumes, oldest first: {"time", "event", "step", "changed": {key: [old, new]}}
    history: list[dict[str, Any]] = field(default_factory=list)
    # what the modality says of the run's data (ModalitySpec.derived; image: the bands by
    # name, band_mean, band_std, scale, nodata, wavelengths)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def mask_ratio(self) -> float | None:
        ratio = self.mask.get("ratio")
        return float(ratio) if ratio is not None else None

    def normalisation(self) -> tuple[list[float], list[float]]:
        """The run's mean and std, ImageNet's where the source did not record them."""
        return list(self.mean or IMAGENET_MEAN), list(self.std or IMAGENET_STD)


def _name(section: Any) -> str | None:
    return section.get("name") if isinstance(section, dict) else section


def _data_config(modality: str | None, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The modality's typed data config (its defaults filled in) and what the modality derives
    of it, or (None, {}) if it cannot be built."""
    from mim.registry import MODALITIES, UnknownNameError

    try:
        spec = MODALITIES.get(modality)
        typed = spec.data_config(**data)
        return typed, dict(spec.derived(typed))
    except (TypeError, ValueError, UnknownNameError):
        return None, {}


def _numbers(value: Any) -> list[float] | None:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else None


def run_facts(conv: Converted) -> RunFacts:
    """The facts of ``conv.run`` (see ``Converted.run``), normalisation resolved through the
    modality's data config, where the run's defaults live."""
    tree = dict(conv.run.get("config") or {})
    loop = dict(conv.run.get("loop") or {})
    modality = _name(tree.get("modality"))
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    typed, described = _data_config(modality, data) if modality else (None, {})
    mean, std = getattr(typed, "mean", None), getattr(typed, "std", None)
    return RunFacts(
        modality=modality, mask=dict(tree.get("mask") or {}),
        mean=_numbers(mean), std=_numbers(std), data=described,
        steps=int(loop["step"]) if "step" in loop else None,
        samples=int(loop["samples"]) if "samples" in loop else None,
        sections={k: tree[k] for k in RUN_SECTIONS if k in tree},
        history=list(conv.run.get("history") or []))
