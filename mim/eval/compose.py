"""``mim eval <protocol> key=value ...`` -> a validated ``EvalSpec``, before any compute.

Where the encoder comes from, in order: ``weights=<file or folder>`` (any format
``mim.load_pretrained`` reads), ``run.dir=<a mim run>`` (its config and newest checkpoint), or
``model=<preset>`` (only with ``eval.init=random``). The architecture is the weights' own;
``model.<key>=`` changes it for transfer (``model.patch_size`` resizes the patch kernels),
``data.<key>=`` chooses the labelled data (a modality's demo set by default). Input geometry and
normalisation are inherited from the pretraining run (or the weights' input size) unless set.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mim.config.errors import ConfigError
from mim.config.overrides import build, parse, take, unknown
from mim.convert import ConvertError, Converted, read_weights
from mim.eval.config import PROTOCOLS, EvalSettings
from mim.factory import ModelConfig, build_tokenizer, model_config
from mim.registry import MODALITIES, UnknownNameError
from mim.spec import LabelledData, ModalitySpec

HEAD_KEYS = ("num_heads", "decoder_num_heads")  # what a state dict cannot tell


@dataclass
class EvalSpec:
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
    out_dir: Path
    labelled: LabelledData  # the splits (file lists; nothing decoded yet)

    def record(self) -> dict[str, Any]:
        """The resolved settings, for the results file."""
        return {"protocol": self.protocol, "seed": self.seed, "modality": self.modality.name,
                "source": self.source, "init": self.settings.init,
                "model": dataclasses.asdict(self.model),
                "data": dataclasses.asdict(self.data), "eval": dataclasses.asdict(self.settings),
                self.protocol: dataclasses.asdict(self.params)}


def run_config(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir).expanduser() / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run.dir: {path} not found; pass the directory mim train printed")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def modality(name: str) -> ModalitySpec:
    try:
        spec = MODALITIES.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"modality: {exc}") from None
    if spec.evaluation is None:
        with_support = [n for n in MODALITIES.names() if MODALITIES.get(n).evaluation]
        raise ConfigError(f"modality: '{name}' provides no labelled data for evaluation; "
                          f"valid: {', '.join(with_support)}")
    return spec


def read(path: str, heads: dict[str, Any], key: str) -> Converted:
    try:
        return read_weights(path, **heads)
    except ConvertError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def data_config(spec: ModalitySpec, run_tree: dict | None, weights: Converted | None,
                values: dict[str, Any]) -> Any:
    """The eval data config: schema defaults < what the run / weights say < the command line."""
    support = spec.evaluation
    inherited: dict[str, Any] = {}
    if run_tree is not None:
        inherited = {k: v for k, v in run_tree.get("data", {}).items() if k in support.inherit}
    elif weights is not None and weights.input_size:
        inherited = support.size_keys(tuple(weights.input_size))
    try:
        base = support.data_config(**inherited)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data: {exc}") from None
    return build(support.data_config, base, values, "data")


def data_error(exc: Exception) -> ConfigError:
    """A dataset's complaint (missing folder, no labelled files) as a config error."""
    text = " ".join(str(exc).split())
    return ConfigError(text if text.startswith("data") else f"data: {text}")


def labelled_data(spec: ModalitySpec, data: Any) -> LabelledData:
    try:
        return spec.evaluation.labelled(data)
    except (FileNotFoundError, ValueError) as exc:
        raise data_error(exc) from None


def check_grid(model: ModelConfig, shape: tuple[int, ...]) -> None:
    try:
        build_tokenizer(model, shape[0]).grid(shape)
    except (ValueError, UnknownNameError) as exc:
        raise ConfigError(f"data.input_size: {exc} (model.patch_size={model.patch_size})") from None


def _architecture(spec: ModalitySpec, run_dir: str | None, run_tree: dict | None,
                  weights_path: str | None, preset: str | None, init: str,
                  model_values: dict[str, Any]) -> tuple[Converted | None, ModelConfig]:
    """(weights or None, the architecture before ``model.<key>`` overrides)."""
    if preset is not None and (run_dir or weights_path):
        raise ConfigError("model: a preset name is for random-init evaluations without run.dir "
                          "or weights; change the architecture with model.<key>=... instead")
    heads = {k: model_values[f"model.{k}"] for k in HEAD_KEYS if f"model.{k}" in model_values}
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
        return None, build(ModelConfig, None, {f"model.{k}": v for k, v in
                                               run_tree["model"].items()}, "model")
    try:
        return None, model_config(preset or spec.default_model or "mae_vit_base_patch16")
    except UnknownNameError as exc:
        raise ConfigError(f"model: {exc}") from None


def load_eval(protocol: str, overrides: list[str]) -> EvalSpec:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol: unknown '{protocol}'; valid: {', '.join(PROTOCOLS)}")
    values = parse(overrides)
    seed = values.pop("seed", None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    run_dir, weights_path = values.pop("run.dir", None), values.pop("weights", None)
    preset, modality_name = values.pop("model", None), values.pop("modality", None)
    settings = build(EvalSettings, None, take(values, "eval"), "eval")
    params = build(PROTOCOLS[protocol], None, take(values, protocol), protocol)
    model_values, data_values = take(values, "model"), take(values, "data")
    unknown(values, ["seed", "run.dir", "weights", "modality", "model", "model.<key>",
                     "data.<key>", "eval.<key>", f"{protocol}.<key>"])

    run_tree = run_config(run_dir) if run_dir else None
    if seed is None:  # a run's own seed: eval.init=random rebuilds the weights it started from
        seed = int(run_tree.get("seed", 0)) if run_tree else 0
    name = run_tree["modality"]["name"] if run_tree else (modality_name or "image")
    if run_tree and modality_name not in (None, name):
        raise ConfigError(f"modality: the run in run.dir is '{name}', not '{modality_name}'")
    spec = modality(name)
    weights, base_model = _architecture(spec, run_dir, run_tree, weights_path, preset,
                                        settings.init, model_values)
    model = build(ModelConfig, base_model, model_values, "model")
    if protocol == "finetune":  # stochastic depth is a fine-tuning setting (MAE Table 9)
        model = dataclasses.replace(model, drop_path=params.drop_path)
    data = data_config(spec, run_tree, weights, data_values)
    shape = tuple(spec.sample_shape(data))
    if weights is not None and weights.in_chans != shape[0]:
        raise ConfigError(f"data: the weights take {weights.in_chans} channels, the data has "
                          f"{shape[0]}")
    check_grid(model, shape)
    if settings.out:
        out_dir = Path(settings.out).expanduser()
    else:
        out_dir = (Path(run_dir).expanduser() / "eval") if run_dir else Path("eval")
    source = "random init" if settings.init == "random" else str(weights_path or run_dir)
    return EvalSpec(protocol, seed, spec, data, model, shape[0], weights if
                    settings.init == "pretrained" else None, source, settings, params, out_dir,
                    labelled_data(spec, data))
