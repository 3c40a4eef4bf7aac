"""``mim visualize run.dir=... input=...``: reconstruction pictures of your own inputs.

Each input is taken in its modality's test view (the centre crop at the run's input size), masked
with the run's mask policy (``mask.ratio=`` and other ``mask.<key>=`` change it; ``seed=`` draws
another mask), and shown as original | masked | reconstruction | reconstruction with the
visible patches pasted back. Norm-pix predictions are mapped back with each patch's own mean
and variance (``mim.reconstruction``). Files: whatever the modality's ``render`` draws (the
built-in ones: a PNG grid, an animated GIF plus a frame strip, slice montages; with
``visualize.audio=true`` for audio, the rows as sound too), written to ``out`` (default
``<run.dir>/pictures/visualize-<input name>``). ``visualize.*`` are the modality's own keys
(``ModalitySpec.visualize_options``). The command line is read in
``mim train``'s grammar (``mim.config.overrides``): ``mask=NAME`` and ``modality=NAME`` choose
options of those groups.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mim.config.errors import ConfigError
from mim.config.overrides import apply, integer, parse, plain, typed, unknown_option, without
from mim.data import LOAD_ERRORS, MimDataset, sample_seed
from mim.reconstruction import reconstruction_panels
from mim.pretrained import HEAD_KEYS, base_data, eval_modality, read, run_config
from mim.models.transfer import build_encoder
from mim.masking import DecoderMasking, MaskConfigError, build_mask, nodata_cells, nodata_first
from mim.registry import MASKS
from mim.spec import ModalitySpec


log = logging.getLogger("mim")
GROUPS = ("mask", "modality")


@dataclass
class VisualizePlan:
    """The pictures to draw, resolved from the command line."""

    modality: ModalitySpec
    data: Any
    weights: Any  # Converted
    mask: Any  # a mask policy
    inputs: MimDataset  # the input files, one test view each
    out: Path
    seed: int
    num: int
    options: Any = None  # the modality's visualize_options, as given


def _tree(data: Any, options: Any = None) -> dict[str, Any]:
    """The config ``mim visualize`` applies the command line to (``data``: the base;
    ``options``: the modality's visualize_options, or none)."""
    return {"run": {"dir": None}, "weights": None, "input": None, "out": None, "seed": 0,
            "num": 8, "mask": {}, "data": data, "model": {k: None for k in HEAD_KEYS},
            "visualize": options() if options is not None else {}}


def _mask(run_tree: dict | None, modality: ModalitySpec, choice: str | None,
          values: dict[str, Any]) -> Any:
    params = dict(run_tree["mask"]) if run_tree else {}
    name = choice or params.pop("name", None) or modality.default_mask or "random"
    if run_tree and name != run_tree["mask"]["name"]:
        params = {}  # another policy: its own defaults
    params.pop("name", None)
    if not run_tree and name == modality.default_mask:
        params.update(modality.mask_defaults)
    params.update(values)
    try:
        return build_mask(name, **params)
    except MaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mask: {exc}") from None


def load_visualize(overrides: list[str]) -> VisualizePlan:
    choices, rest = parse(overrides, GROUPS)
    if choices.get("mask", "random") not in MASKS.names():  # checked before any file is read
        raise ConfigError(unknown_option("mask", choices["mask"], MASKS.names()))
    # where the weights come from decides the data base, so the command line is first applied
    # to an open data section
    first = apply(_tree({}), without(without(rest, "data"), "visualize"), GROUPS,
                  open_keys=("mask",))
    run_dir, weights_path = plain(first.run.dir, "run.dir"), plain(first.weights, "weights")
    source = plain(first.input, "input")
    if source is None:
        raise ConfigError("input: required (a file of the run's modality, or a folder of them)")
    source = Path(str(source)).expanduser()
    if not source.exists():
        raise ConfigError(f"input: {source} does not exist")
    if not (run_dir or weights_path):
        raise ConfigError("run.dir: required (a mim run), or weights=<file or folder> with "
                          "modality=<name>")
    run_tree = run_config(run_dir) if run_dir else None
    modality = eval_modality(run_tree, choices.get("modality"))
    heads = {k: v for k, v in plain(first.model, "model").items() if v is not None}
    weights = read(weights_path or run_dir, heads, "weights" if weights_path else "run.dir")
    if not weights.has_decoder:
        raise ConfigError("weights: they hold no decoder (an encoder-only file); reconstruction "
                          "pictures need the MAE decoder")
    final = apply(_tree(base_data(modality, run_tree, weights), modality.visualize_options),
                  rest, GROUPS, open_keys=("mask",))
    mask = _mask(run_tree, modality, choices.get("mask"), plain(final.mask, "mask"))
    data = typed(modality.evaluation.data_config, plain(final.data, "data"), "data")
    seed, num = integer("seed", plain(final.seed, "seed")), plain(final.num, "num")
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ConfigError(f"num: pictures per file, an integer >= 1; got {num!r}")
    try:
        inputs = modality.evaluation.inputs(data, source)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"input: {' '.join(str(exc).split())}") from None
    out = plain(final.out, "out")
    if out is None:
        base = Path(run_dir).expanduser() / "pictures" if run_dir else Path("pictures")
        out = base / f"visualize-{source.stem}"
    options = (typed(modality.visualize_options, plain(final.visualize, "visualize"),
                     "visualize") if modality.visualize_options is not None else None)
    return VisualizePlan(modality, data, weights, mask, inputs, Path(str(out)).expanduser(),
                         seed, num, options)


def _readable(dataset: MimDataset, skipped: list[str]) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, x) of each input that loads; each one that does not goes to ``skipped`` as
    "path: reason" (never replaced by the next one, as a training set's items are)."""
    for index in range(len(dataset)):
        try:
            x, _ = dataset.load(index, 0)
        except LOAD_ERRORS as exc:
            reason = " ".join((str(exc) or type(exc).__name__).split())
            skipped.append(f"{dataset.describe(index)}: {reason}")
            continue
        yield index, x


@torch.no_grad()
def visualize(plan: VisualizePlan) -> list[Path]:
    """Write the pictures; returns their paths (one picture holds up to ``num`` inputs, one row
    each). Unreadable inputs are skipped with a line each; none readable: ValueError, and no
    folder is made."""
    dataset = plan.inputs
    model = build_encoder(plan.weights.config, plan.weights.in_chans, plan.weights,
                          nodata=dataset.nodata).eval()
    shape = tuple(plan.modality.sample_shape(plan.data))
    grid = model.tokenizer.mask_grid(shape)
    try:
        plan.mask.check(grid)
    except MaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    written: list[Path] = []
    skipped: list[str] = []
    readable = _readable(dataset, skipped)
    for picture in itertools.count():
        chunk = list(itertools.islice(readable, plan.num))
        if not chunk:
            break
        for line in skipped:
            log.warning("input %s (skipped)", line)
        skipped.clear()
        x = torch.stack([item for _, item in chunk])  # [N, C, *spatial]
        masks, targets = [], []
        for i, item in chunk:
            g = torch.Generator().manual_seed(sample_seed(plan.seed, 0, i, "visualize"))
            masks.append(plan.mask(grid, g))  # [L]
            mostly = nodata_cells(item, grid) if dataset.nodata else None
            if mostly is not None and mostly.any():  # as in training: no data masked first
                masks[-1] = nodata_first(masks[-1], mostly, g)
            if isinstance(plan.mask, DecoderMasking):  # the part the decoder scores
                targets.append(plan.mask.targets(grid, g, masks[-1]))  # [L]
        panels = reconstruction_panels(model, x, torch.stack(masks), torch.stack(targets)
                                       if targets else None)  # each [N, C, *spatial]
        plan.out.mkdir(parents=True, exist_ok=True)  # only once there is a picture to write
        stem = plan.out / f"reconstruction_{picture:03d}"
        extra = {"options": plan.options} if plan.options is not None else {}
        plan.modality.render(panels, plan.data, stem, **extra)
        written += sorted(plan.out.glob(f"{stem.name}[._]*"))  # a GIF beside the PNG, sounds
    if not written:
        first = f"; {skipped[0]}" if len(skipped) == 1 else f"; the first: {skipped[0]}"
        raise ValueError(f"input: none of the {len(dataset)} input(s) could be read as "
                         f"{plan.modality.name} data{first if skipped else ''}; nothing written")
    for line in skipped:  # the ones after the last picture
        log.warning("input %s (skipped)", line)
    return written
