"""``mim eval <protocol> key=value ...`` -> an ``EvalPlan``: everything checked, before compute.

Where the encoder comes from, in order: ``weights=<file or folder>`` (any format
``mim.load_pretrained`` reads), ``run.dir=<a mim run>`` (its config and newest checkpoint), or
``model=<preset>`` (only with ``eval.init=random``). The architecture is the weights' own;
``model.<key>=`` changes it for transfer (``model.patch_size`` resizes the patch kernels),
``data.<key>=`` chooses the labelled data (a modality's demo set by default). Input geometry and
normalisation are inherited from the pretraining run (or the weights' input size) unless set.
The command line is read in ``mim train``'s grammar (``mim.config.overrides``): ``model=NAME``
and ``modality=NAME`` choose options of those groups, as they do there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mim.config.compose import resolved_data
from mim.init import source_bands
from mim.models.tokenizers.base import SelectsBands
from mim.registry import TOKENIZERS
from mim.config.errors import ConfigError
from mim.config.overrides import apply, integer, parse, plain, typed, unknown_option, without
from mim.convert import Converted
from mim.data.segmentation import SegmentRules
from mim.eval.schema import PROTOCOLS, EvalSettings, SegmentConfig
from mim.models.factory import ModelConfig, model_config, token_grids
from mim.registry import MODELS, UnknownNameError
from mim.spec import LabelledData, ModalitySpec, SegmentData
from mim.pretrained import HEAD_KEYS, base_data, eval_modality, read, run_config

log = logging.getLogger("mim")
GROUPS = ("model", "modality")


@dataclass
class EvalPlan:
    """One evaluation, resolved from the command line: what to build and run, and where."""

    protocol: str
    seed: int
    modality: ModalitySpec
    data: Any  # the modality's eval data config
    model: ModelConfig
    in_chans: int
    weights: Converted | None  # None: random initialisation
    source: str  # where the weights came from, or "random init"
    settings: EvalSettings
    params: Any  # the protocol's section
    out_file: Path  # the results file (JSON)
    labelled: LabelledData | SegmentData  # the splits (file lists; nothing decoded yet)
    # the weights' band indices the data holds, where an encoder that takes a subset of its
    # bands (channel2d, spectral2d) evaluates on fewer; None: all of them
    band_ids: list[int] | None = None

    def record(self) -> dict[str, Any]:
        """The resolved settings, for the results file."""
        return {"protocol": self.protocol, "seed": self.seed, "modality": self.modality.name,
                "source": self.source, "init": self.settings.init,
                "model": dataclasses.asdict(self.model),
                "data": dataclasses.asdict(self.data), "eval": dataclasses.asdict(self.settings),
                self.protocol: dataclasses.asdict(self.params)}


def data_error(exc: Exception) -> ConfigError:
    """A dataset's complaint (missing folder, no labelled files) as a config error."""
    text = " ".join(str(exc).split())
    return ConfigError(text if text.startswith("data") else f"data: {text}")


def _resolver(modality: ModalitySpec, protocol: str):
    support = modality.evaluation
    return support.resolve_segment if protocol == "segment" else support.resolve


def segment_data(modality: ModalitySpec, data: Any, params: SegmentConfig) -> SegmentData:
    """The modality's images or volumes with their label maps (``SegmentData``)."""
    if modality.evaluation.segmentation is None:
        raise ConfigError(f"modality: '{modality.name}' has no segmentation data; "
                          "mim eval segment takes images and volumes")
    rules = SegmentRules(params.num_classes, params.ignore_index, params.reduce_zero_label)
    try:
        return modality.evaluation.segmentation(data, rules)
    except (FileNotFoundError, ValueError) as exc:
        raise data_error(exc) from None


def resolved_head(params: SegmentConfig, rank: int) -> SegmentConfig:
    """``auto`` choices made for samples of ``rank`` spatial axes: the head (linear in 2D,
    unetr in 3D), the loss (ce, dice_ce) and the window weighting (constant, gaussian)."""
    head = params.head if params.head != "auto" else ("linear" if rank == 2 else "unetr")
    if head == "upernet" and rank != 2:
        raise ConfigError("segment.head: upernet is for 2D label maps; volumes take unetr "
                          "or linear")
    if head == "unetr" and importlib.util.find_spec("monai") is None:
        raise ConfigError("segment.head: unetr is built from MONAI's blocks: pip install "
                          "'mim-pretrain[monai]'")
    return dataclasses.replace(
        params, head=head,
        loss=params.loss if params.loss != "auto" else ("ce" if rank == 2 else "dice_ce"),
        weighting=params.weighting if params.weighting != "auto" else (
            "constant" if rank == 2 else "gaussian"))


def labelled_data(modality: ModalitySpec, data: Any) -> LabelledData:
    try:
        return modality.evaluation.labelled(data)
    except (FileNotFoundError, ValueError) as exc:
        raise data_error(exc) from None


def subset_ids(weights: Converted, model: ModelConfig, names: list[str] | None,
               count: int) -> list[int]:
    """The weights' indices of the data's bands, by name, for a tokenizer that encodes a
    subset of its bands; otherwise the one-line refusal of another channel count."""
    refusal = f"data: the weights take {weights.in_chans} channels, the data has {count}"
    if not issubclass(TOKENIZERS.get(model.tokenizer_name), SelectsBands):
        raise ConfigError(refusal)
    theirs = source_bands(weights)
    if not theirs or not names:
        raise ConfigError(f"{refusal}; a subset needs the bands by name on both sides")
    missing = [b for b in names if b not in theirs]
    if missing:
        raise ConfigError(f"data.bands: the weights have no band {missing[0]} (theirs: "
                          f"{', '.join(theirs)})")
    log.info("eval: the encoder's bands %s of its %d", ", ".join(names), len(theirs))
    return [theirs.index(b) for b in names]


def check_grid(model: ModelConfig, shape: tuple[int, ...]) -> None:
    try:
        token_grids(model, shape)
    except UnknownNameError as exc:
        raise ConfigError(f"model.tokenizer: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"data.input_size: {exc} (model.patch_size={model.patch_size})") from None


def _architecture(modality: ModalitySpec, run_dir: str | None, run_tree: dict | None,
                  weights_path: str | None, preset: str | None, init: str,
                  heads: dict[str, Any]) -> tuple[Converted | None, ModelConfig]:
    """(weights or None, the architecture before ``model.<key>`` overrides)."""
    if preset is not None and (run_dir or weights_path):
        raise ConfigError("model: a preset name is for random-init evaluations without run.dir "
                          "or weights; change the architecture with model.<key>=... instead")
    weights = None
    if weights_path:
        weights = read(weights_path, heads, "weights")
    elif run_dir and init == "pretrained":
        weights = read(run_dir, heads, "run.dir")
    if init == "pretrained" and weights is None:
        raise ConfigError("eval.init: 'pretrained' needs run.dir=<a mim run> or weights=<file or "
                          "folder>; for an untrained encoder set eval.init=random")
    if weights is not None:
        return weights, weights.config
    if run_tree is not None:
        return None, typed(ModelConfig, run_tree["model"], "model")
    preset = preset or modality.default_model or "mae_vit_base_patch16"
    if preset not in MODELS.names():
        raise ConfigError(unknown_option("model", preset, MODELS.names()))
    return None, model_config(preset)


def heads(first: Any, overrides: list) -> dict[str, Any]:
    """The head counts the command line sets (a state dict cannot tell them)."""
    given = {o.key_or_group for o in overrides}
    return {k: plain(first.model[k], f"model.{k}") for k in HEAD_KEYS if f"model.{k}" in given}


def _tree(protocol: str, model: Any, data: Any) -> dict[str, Any]:
    """The config ``mim eval`` applies the command line to (``model`` and ``data``: the bases)."""
    return {"seed": None, "run": {"dir": None}, "weights": None, "eval": EvalSettings,
            protocol: PROTOCOLS[protocol], "model": model, "data": data}


def load_eval(protocol: str, overrides: list[str]) -> EvalPlan:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: unknown '{protocol}'; valid: {', '.join(PROTOCOLS)}")
    choices, rest = parse(overrides, GROUPS)
    # where the weights come from decides the bases, so those keys are read first, from the
    # command line applied to default sections (the data config depends on the modality, the
    # tokenizer's keys on the base model's tokenizer)
    first = apply(_tree(protocol, ModelConfig, {}),
                  without(without(rest, "data"), "model.tokenizer"), GROUPS)
    run_dir, weights_path = plain(first.run.dir, "run.dir"), plain(first.weights, "weights")
    init = typed(EvalSettings, plain(first.eval, "eval"), "eval").init
    typed(PROTOCOLS[protocol], plain(first[protocol], protocol), protocol)  # checked before I/O
    run_tree = run_config(run_dir) if run_dir else None
    modality = eval_modality(run_tree, choices.get("modality"))
    weights, base_model = _architecture(modality, run_dir, run_tree, weights_path,
                                        choices.get("model"), init, heads(first, rest))
    final = apply(_tree(protocol, base_model, base_data(modality, run_tree, weights)), rest,
                  GROUPS)
    seed = plain(final.seed, "seed")
    if seed is None:  # a run's own seed: eval.init=random rebuilds the weights it started from
        seed = int(run_tree.get("seed", 0)) if run_tree else 0
    settings = typed(EvalSettings, plain(final.eval, "eval"), "eval")
    params = typed(PROTOCOLS[protocol], plain(final[protocol], protocol), protocol)
    model = typed(ModelConfig, plain(final.model, "model"), "model")
    if protocol == "finetune":  # stochastic depth is a fine-tuning setting (MAE Table 9)
        model = dataclasses.replace(model, drop_path=params.drop_path)
    data = typed(modality.evaluation.data_config, plain(final.data, "data"), "data")
    data = resolved_data(_resolver(modality, protocol), data)
    shape = tuple(modality.sample_shape(data))
    band_ids = None
    if weights is not None and weights.in_chans != shape[0]:
        band_ids = subset_ids(weights, model, modality.derived(data).get("bands"), shape[0])
    check_grid(model, (weights.in_chans, *shape[1:]) if band_ids else shape)
    source = "random init" if settings.init == "random" else str(weights_path or run_dir)
    if protocol == "segment":
        rank = modality.evaluation.segment_rank
        params = resolved_head(params, rank)  # before the labels are read
        labelled = segment_data(modality, data, params)
        if labelled.rank != rank or len(shape) - 1 < rank:
            raise ConfigError(f"data: samples of {len(shape) - 1} axes, label maps of "
                              f"{labelled.rank}")
        if params.head != "linear":  # a fine-tuned encoder: stochastic depth (mmseg's MAE)
            model = dataclasses.replace(model, drop_path=params.drop_path)
    else:
        labelled = labelled_data(modality, data)
    check_splits(labelled, data, protocol, params)  # before any feature is computed
    return EvalPlan(protocol, integer("seed", seed), modality, data, model,
                    weights.in_chans if band_ids else shape[0],
                    weights if settings.init == "pretrained" else None, source, settings,
                    params, results_file(settings.out, run_dir, result_name(protocol, params),
                                         settings.init, data),
                    labelled, band_ids)


def result_name(protocol: str, params: Any) -> str:
    """The protocol's part of a results file's name: segment's names its head too, so a linear
    run does not replace the UNETR run's results beside it."""
    return f"segment-{params.head}" if protocol == "segment" else protocol


def results_file(out: str | None, run_dir: str | None, protocol: str, init: str,
                 data: Any) -> Path:
    """``eval.out`` ending in .json is the file itself; otherwise the folder (default
    ``<run.dir>/eval`` or ``./eval``) gets ``<protocol>-<init>.json``, named by the data too
    (``-<folder>-<hash>``) when ``data.root`` / ``data.val_root`` are set, so results on other
    data never replace these."""
    if out and out.lower().endswith(".json"):
        return Path(out).expanduser()
    folder = Path(out).expanduser() if out else (
        Path(run_dir).expanduser() / "eval" if run_dir else Path("eval"))
    roots = [str(Path(r).expanduser().resolve()) for r in
             (getattr(data, "root", None), getattr(data, "val_root", None)) if r]
    tag = ""
    if roots:
        digest = hashlib.sha256("\n".join(roots).encode()).hexdigest()[:8]
        tag = f"-{Path(roots[0]).name}-{digest}"
    return folder / f"{protocol}-{init}{tag}.json"


def check_splits(labelled: LabelledData | SegmentData, data: Any, protocol: str, params: Any) -> None:
    """Sizes the protocols need, checked from the file lists: a held-out and a training item
    (ConfigError naming the key); one class or k-NN's k above the training set warned about."""
    root = "data.root" if getattr(data, "root", None) else "data.root (the demo set)"
    held = "data.val_root" if getattr(data, "val_root", None) else root
    if len(labelled.val) == 0 and protocol == "segment":
        raise ConfigError(f"{root}: no held-out pair (an empty validation split); add pairs "
                          "or set data.val_fraction")
    if len(labelled.val) == 0:
        raise ConfigError(f"{held}: no held-out item: a class needs two or more items to hold "
                          "one out (data.val_fraction), or give a held-out set in data.val_root")
    if len(labelled.train) == 0:
        raise ConfigError(f"{root}: no training item left after holding out "
                          f"{len(labelled.val)}; add items or lower data.val_fraction")
    if len(labelled.classes) < 2:
        log.warning("%s: one class (%s) only: every prediction is right, so top-1 is 100 %% by "
                    "construction and says nothing about the features", root,
                    ", ".join(labelled.classes) or "unnamed")
    if protocol == "knn" and params.k > len(labelled.train):
        log.warning("knn.k=%d is more than the %d training items: all %d vote", params.k,
                    len(labelled.train), len(labelled.train))
