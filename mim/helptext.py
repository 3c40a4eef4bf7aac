"""``mim --version``, and the ``--help`` text of each ``mim`` command generated from the schemas
and the registries.

Every key is listed with its type, default and meaning (``mim.config.help``); group options
are those ``mim train`` composes from (``mim.config.compose``: the registries plus the YAML
files of ``mim.configs`` and of plugins).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed
from typing import Any

from omegaconf import OmegaConf

from mim.config.compose import CONFIG_DIR, GROUPS, _group_options, register_configs
from mim.config.help import Key, keys, options, table
from mim.config.schema import BaseConfig, OptimConfig, RunConfig, TrainConfig
from mim.eval.schema import PROTOCOLS, EvalSettings
from mim.models.factory import ModelConfig
from mim.registry import BACKENDS, LAUNCHERS, MASKS, MODALITIES, TOKENIZERS, TRACKERS

MODEL_NOTE = ("(the defaults of ModelConfig; a preset, model=NAME, sets its own: "
              "`mim train model=NAME --cfg` shows them)")


def version() -> str:
    """The installed distribution's version (``mim/__init__.py``'s in a source tree)."""
    try:
        return installed("mim-pretrain")
    except PackageNotFoundError:
        from mim import __version__

        return __version__


def _defaults() -> dict[str, str]:
    """The default option of each group, from the primary config's defaults list."""
    chosen = {}
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml").defaults)
    for entry in defaults:  # unresolved: data's is ${modality}
        if isinstance(entry, dict):
            chosen.update({str(k): str(v) for k, v in entry.items()})
    return chosen


def _plugin_sections(group: str, registry: Any) -> list[tuple[str, type | None, str]]:
    return [(f"{group}={name}", getattr(registry.get(name), "Config", None), f"{group}.")
            for name in registry.names()]


def train_sections() -> list[tuple[str, type | None, str]]:
    """(title, schema dataclass or None, key prefix) of every section ``mim train`` reads."""
    sections = [("top level", BaseConfig, ""), ("train", TrainConfig, "train."),
                ("optim", OptimConfig, "optim."), ("run", RunConfig, "run."),
                (f"model {MODEL_NOTE}", ModelConfig, "model.")]
    sections += [(f"model.tokenizer.name={name}", getattr(TOKENIZERS.get(name), "Config", None),
                  "model.tokenizer.") for name in TOKENIZERS.names()]
    sections += [(f"mask={name}", MASKS.get(name), "mask.") for name in MASKS.names()]
    sections += [(f"data (modality={name})", MODALITIES.get(name).data_config, "data.")
                 for name in MODALITIES.names()]
    return sections + _plugin_sections("backend", BACKENDS) + _plugin_sections("launcher",
                                                                              LAUNCHERS)


def _rows(cls: type | None, prefix: str) -> list[Key]:
    if cls is None:
        return []
    # nested sections (train, run) have sections of their own; a plugin's name is its choice
    skip = ("train", "run") if cls is BaseConfig else ("name",) if prefix == "mask." else ()
    return keys(cls, prefix, skip)


def _render(sections: list[tuple[str, type | None, str]]) -> str:
    return "\n\n".join(f"{title}:\n{table(_rows(cls, prefix))}" for title, cls, prefix in sections)


def train_help(usage: str) -> str:
    register_configs()
    defaults = _defaults()
    groups = "\n".join(options(f"  {g}", _group_options(g) if g != "data" else MODALITIES.names(),
                               defaults.get(g)) for g in GROUPS)
    # not a Hydra group but chosen the same way, several at once allowed: tracker=[a,b]
    groups += "\n" + options("  tracker", TRACKERS.names(), "tensorboard")
    return (f"{usage}\n\nGroups (group=OPTION; * the default; data follows modality; "
            f"tracker=[A,B] for several):\n{groups}"
            f"\n\nKeys (key=VALUE), with type, default and meaning:\n\n"
            f"{_render(train_sections())}\n\n"
            "--cfg prints the composed config and the values derived from it (learning rate, "
            "steps, warmup, grid,\nmasked tokens, parameters, precision) and exits; nothing is "
            "trained or written.")


def eval_sections() -> list[tuple[str, type | None, str]]:
    sections = [("eval", EvalSettings, "eval.")]
    sections += [(f"{name} (mim eval {name})", cls, f"{name}.") for name, cls in PROTOCOLS.items()]
    sections.append((f"model {MODEL_NOTE}", ModelConfig, "model."))
    return sections + _eval_data()


def _eval_data() -> list[tuple[str, type | None, str]]:
    return [(f"data (modality={name})", MODALITIES.get(name).evaluation.data_config, "data.")
            for name in MODALITIES.names() if MODALITIES.get(name).evaluation is not None]


def eval_help(usage: str) -> str:
    register_configs()
    return (f"{usage}\n\n{options('  modality', MODALITIES.names())}\n\nKeys (key=VALUE), with "
            f"type, default and meaning:\n\n{_render(eval_sections())}")


def visualize_sections() -> list[tuple[str, type | None, str]]:
    own = [(f"visualize (modality={name})", MODALITIES.get(name).visualize_options, "visualize.")
           for name in MODALITIES.names() if MODALITIES.get(name).visualize_options is not None]
    return ([(f"mask={name}", MASKS.get(name), "mask.") for name in MASKS.names()] + own
            + _eval_data())


def visualize_help(usage: str) -> str:
    register_configs()
    groups = f"{options('  mask', MASKS.names())}\n{options('  modality', MODALITIES.names())}"
    return (f"{usage}\n\n{groups}\n\nKeys (key=VALUE; default: the run's own), with type, "
            "default and meaning:\n\n"
            f"{_render(visualize_sections())}")


def usage_of(command: str, usage: str) -> str:
    """The lines of the general ``usage`` about ``command`` (its lines and those indented
    under them)."""
    lines, keep = [], False
    for line in usage.splitlines():
        if line.startswith("  mim "):
            keep = line.startswith(f"  mim {command} ") or line == f"  mim {command}"
        if keep:
            lines.append(line)
    return "usage:\n" + "\n".join(lines)


def command_help(command: str, usage: str) -> str:
    """``mim COMMAND --help``: its usage, groups and keys; the general usage for another word."""
    texts = {"train": train_help, "eval": eval_help, "visualize": visualize_help}
    if command in texts:
        return texts[command](usage_of(command, usage))
    if command in ("plugins", "convert", "data"):
        return usage_of(command, usage)
    return usage
