"""Where an evaluation or ``mim visualize`` starts from: a run's config, the weights (any
format ``mim.convert`` reads), the run's modality with labelled data, and the data settings the
run or the weights fix (input geometry, normalisation). Both commands read them alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mim.config.errors import ConfigError
from mim.config.migrate import current
from mim.config.overrides import unknown_option
from mim.convert import ConvertError, Converted, read_weights
from mim.registry import MODALITIES
from mim.spec import ModalitySpec

HEAD_KEYS = ("num_heads", "decoder_num_heads")  # what a state dict cannot tell


def run_config(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir).expanduser() / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run.dir: {path} not found; pass the directory mim train printed")
    return current(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def eval_modality(run_tree: dict | None, choice: str | None) -> ModalitySpec:
    """The run's modality (``modality=`` may only repeat it), else ``choice`` (default image);
    it must provide labelled data."""
    name = run_tree["modality"]["name"] if run_tree else (choice or "image")
    if run_tree and choice not in (None, name):
        raise ConfigError(f"modality: the run in run.dir is '{name}', not '{choice}'")
    if name not in MODALITIES.names():
        raise ConfigError(unknown_option("modality", name, MODALITIES.names()))
    modality = MODALITIES.get(name)
    if modality.evaluation is None:
        with_support = [n for n in MODALITIES.names() if MODALITIES.get(n).evaluation]
        raise ConfigError(f"modality: '{name}' provides no labelled data for evaluation; "
                          f"valid: {', '.join(with_support)}")
    return modality


def read(path: str, heads: dict[str, Any], key: str) -> Converted:
    try:
        return read_weights(path, **heads)
    except ConvertError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def base_data(modality: ModalitySpec, run_tree: dict | None, weights: Converted | None) -> Any:
    """The eval data config before the command line: schema defaults < what the run / weights
    say."""
    support = modality.evaluation
    inherited: dict[str, Any] = {}
    if run_tree is not None:
        inherited = {k: v for k, v in run_tree.get("data", {}).items() if k in support.inherit}
    elif weights is not None and weights.input_size:
        inherited = support.size_keys(tuple(weights.input_size))
    try:
        return support.data_config(**inherited)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data: {exc}") from None
