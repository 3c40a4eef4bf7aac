"""``mim visualize run.dir=... input=...``: reconstruction pictures of your own inputs.

Each input is taken in its modality's test view (the centre crop at the run's input size), masked
with the run's mask policy (``mask.ratio=`` and other ``mask.<key>=`` change it; ``seed=`` draws
another mask), and shown as original | masked | reconstruction | reconstruction with the
visible patches pasted back. Norm-pix predictions are mapped back with each patch's own mean
and variance (``mim.engine.visual``). Files: whatever the modality's ``visualize`` draws (the
built-in ones: a PNG grid, an animated GIF plus a frame strip, slice montages), written to
``out`` (default ``<run.dir>/pictures/visualize-<input name>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mim.config.errors import ConfigError
from mim.config.overrides import parse, take, unknown
from mim.data import MimDataset, sample_seed
from mim.engine.visual import reconstruction_panels
from mim.eval.compose import data_config, modality, read, run_config
from mim.eval.transfer import build_encoder
from mim.masking import MaskConfigError, build_mask
from mim.registry import UnknownNameError
from mim.spec import ModalitySpec


@dataclass
class VisualizeSpec:
    modality: ModalitySpec
    data: Any
    weights: Any  # Converted
    mask: Any  # a mask policy
    inputs: MimDataset  # the input files, one test view each
    out: Path
    seed: int
    num: int


def _mask(run_tree: dict | None, spec: ModalitySpec, values: dict[str, Any]) -> Any:
    params = dict(run_tree["mask"]) if run_tree else {}
    name = values.pop("mask", None) or params.pop("name", None) or spec.default_mask or "random"
    if run_tree and name != run_tree["mask"]["name"]:
        params = {}  # another policy: its own defaults
    params.pop("name", None)
    params.update({k.split(".", 1)[1]: v for k, v in take(values, "mask").items()})
    try:
        return build_mask(name, **params)
    except UnknownNameError as exc:
        raise ConfigError(f"mask: {exc}") from None
    except MaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mask: {exc}") from None


def load_visualize(overrides: list[str]) -> VisualizeSpec:
    values = parse(overrides)
    run_dir, weights_path = values.pop("run.dir", None), values.pop("weights", None)
    source = values.pop("input", None)
    if source is None:
        raise ConfigError("input: required (a file of the run's modality, or a folder of them)")
    source = Path(str(source)).expanduser()
    if not source.exists():
        raise ConfigError(f"input: {source} does not exist")
    if not (run_dir or weights_path):
        raise ConfigError("run.dir: required (a mim run), or weights=<file or folder> with "
                          "modality=<name>")
    seed, num = values.pop("seed", 0), values.pop("num", 8)
    if not isinstance(num, int) or num < 1:
        raise ConfigError(f"num: pictures per file, an integer >= 1; got {num!r}")
    out = values.pop("out", None)
    run_tree = run_config(run_dir) if run_dir else None
    name = run_tree["modality"]["name"] if run_tree else values.pop("modality", "image")
    spec = modality(name)
    heads = {k.split(".")[1]: values.pop(k) for k in ("model.num_heads",
                                                      "model.decoder_num_heads") if k in values}
    weights = read(weights_path or run_dir, heads, "weights" if weights_path else "run.dir")
    if not weights.has_decoder:
        raise ConfigError("weights: they hold no decoder (an encoder-only file); reconstruction "
                          "pictures need the MAE decoder")
    mask = _mask(run_tree, spec, values)
    data = data_config(spec, run_tree, weights, take(values, "data"))
    unknown(values, ["run.dir", "weights", "modality", "input", "out", "seed", "num", "mask",
                     "mask.<key>", "data.<key>", "model.num_heads", "model.decoder_num_heads"])
    try:
        inputs = spec.evaluation.inputs(data, source)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"input: {' '.join(str(exc).split())}") from None
    if out is None:
        base = Path(run_dir).expanduser() / "pictures" if run_dir else Path("pictures")
        out = base / f"visualize-{source.stem}"
    return VisualizeSpec(spec, data, weights, mask, inputs, Path(str(out)).expanduser(),
                         int(seed), num)


@torch.no_grad()
def visualize(spec: VisualizeSpec) -> list[Path]:
    """Write the pictures; returns their paths (one picture holds up to ``num`` inputs)."""
    model = build_encoder(spec.weights.config, spec.weights.in_chans, spec.weights).eval()
    dataset = spec.inputs
    shape = tuple(spec.modality.sample_shape(spec.data))
    grid = model.tokenizer.mask_grid(shape)
    try:
        spec.mask.check(grid)
    except MaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    spec.out.mkdir(parents=True, exist_ok=True)
    written = []
    for first in range(0, len(dataset), spec.num):
        items = range(first, min(first + spec.num, len(dataset)))
        x = torch.stack([dataset[(i, 0)].x for i in items])  # [N, C, *spatial]
        masks = [spec.mask(grid, torch.Generator().manual_seed(
            sample_seed(spec.seed, 0, i, "visualize"))) for i in items]
        panels = reconstruction_panels(model, x, torch.stack(masks))  # each [N, C, *spatial]
        stem = spec.out / f"reconstruction_{first // spec.num:03d}"
        spec.modality.visualize(panels, spec.data, stem)
        written += sorted(spec.out.glob(f"{stem.name}.*"))  # e.g. a GIF beside the PNG
    return written
