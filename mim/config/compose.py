"""Compose the run config with Hydra, then check every section against its schema.

Group options come from two places: YAML files in ``mim.configs`` (and in plugin config dirs)
and nodes generated from the registries (every model preset, mask policy, modality, backend and
launcher), so a registered plugin is selectable without writing a YAML file. Any failure becomes
a ``ConfigError`` whose message is one line naming the key and the valid values.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import mim.configs
from mim.config.errors import ConfigError
from hydra.core.override_parser.types import Override

from mim.config.overrides import check_keys, integer, message, parse, plain, typed
from mim.config.overrides import unknown_key, unknown_option
from mim.config.run_spec import Plugin, RunSpec
from mim.config.schema import BaseConfig, OptimConfig, RunConfig, TrainConfig
from mim.masking import MaskConfigError, build_mask
from mim.data import resolution
from mim.models.factory import ModelConfig, check_decoder_grid, token_grids
from mim.registry import ALL, BACKENDS, CONFIG_DIRS, LAUNCHERS, MASKS, MODALITIES, MODELS
from mim.registry import TRACKERS
from mim.plugins import load_plugins
from mim.registry import UnknownNameError

log = logging.getLogger("mim.config")

CONFIG_DIR = Path(mim.configs.__file__).parent
GROUPS = ("modality", "data", "model", "mask", "optim", "backend", "launcher", "experiment")


def _plugin_config(cls: Any) -> dict[str, Any]:
    """Default parameters of a registered class with an optional ``Config`` dataclass."""
    config = getattr(cls, "Config", None)
    if config is None:
        return {}
    # read from the fields, not by building Config(): its checks may require a parameter that
    # has no usable default (launcher=tpu's name and zone); validate() runs them on the real node
    defaults = {}
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            value = "???"  # OmegaConf's mandatory marker
        defaults[field.name] = (dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                                else copy.deepcopy(value))
    return defaults


def register_configs() -> None:
    """Fill Hydra's ConfigStore from the registries (idempotent)."""
    load_plugins()
    cs = ConfigStore.instance()
    # a plain root (modality plugins add sections) holding typed sections
    cs.store(name="mim_base", node={"seed": BaseConfig.seed, "tracker": "tensorboard",
                                    "train": OmegaConf.structured(TrainConfig),
                                    "run": OmegaConf.structured(RunConfig)})
    cs.store(group="optim", name="adamw", node=OptimConfig)
    for name in MODELS.names():
        cs.store(group="model", name=name, node=MODELS.get(name)())
    for name in MASKS.names():
        defaults = dataclasses.asdict(MASKS.get(name)())
        cs.store(group="mask", name=name, node={"name": name, **defaults})
    for name in MODALITIES.names():
        spec = MODALITIES.get(name)
        # a modality may choose its own default model and mask; the command line still wins
        defaults = [{f"override /{group}": choice} for group, choice in
                    (("model", spec.default_model), ("mask", spec.default_mask)) if choice]
        node = {"defaults": defaults, "modality": {"name": name}}
        if spec.mask_defaults:  # after the mask group in the defaults list: overrides it
            node["mask"] = dict(spec.mask_defaults)
        cs.store(group="modality", name=name, package="_global_", node=node)
        cs.store(group="data", name=name, node=spec.data_config)
    for name in BACKENDS.names():
        cs.store(group="backend", name=name,
                 node={"name": name, **_plugin_config(BACKENDS.get(name))})
    for name in LAUNCHERS.names():
        cs.store(group="launcher", name=name,
                 node={"name": name, **_plugin_config(LAUNCHERS.get(name))})


def _group_options(group: str) -> list[str]:
    try:
        names = set(ConfigStore.instance().list(group)) if group in GROUPS else set()
    except OSError:  # the store holds no node of the group (experiment: YAML files only)
        names = set()
    for folder in [CONFIG_DIR, *map(Path, CONFIG_DIRS)]:
        if (folder / group).is_dir():
            names |= {p.name for p in (folder / group).glob("*.yaml")}
    return sorted(n.removesuffix(".yaml") for n in names)


def compose(overrides: list[str]) -> DictConfig:
    """Hydra composition of ``configs/config.yaml`` with ``overrides``; errors -> ConfigError."""
    # the grammar's own errors, worded as for every command
    parsed = parse(overrides, [g for g in GROUPS if g != "experiment"])[1]
    _refuse_hydra_keys(parsed)
    register_configs()
    extra = [f"file://{d}" for d in CONFIG_DIRS]
    search = [f"hydra.searchpath=[{','.join(extra)}]"] if extra else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="mim"):
            return hydra_compose(config_name="config", overrides=[*overrides, *search])
    except MissingConfigException as exc:
        raise ConfigError(_missing_message(exc)) from None
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(message(exc, lambda parent: _valid_keys(parent, overrides),
                                  parsed)) from None
    finally:
        GlobalHydra.instance().clear()


# Hydra's own settings a Hydra user may reach for, and what mim has in their place
HYDRA_KEYS = {"hydra.run.dir": "the run's folder is run.dir=...",
              "hydra.sweep.dir": "a sweep's folder is run.dir=... (a subfolder per point)",
              "hydra.job.chdir": "mim never changes the working directory",
              "hydra.verbose": "the run's log is <run dir>/train.log",
              "hydra/launcher": "mim chooses where it runs with launcher=NAME (mim plugins "
                                "lists them)"}


def _refuse_hydra_keys(parsed: list[Override]) -> None:
    """A ``hydra.*`` override would be taken by Hydra's own config and dropped from the run's
    without a word (mim keeps no Hydra output folder or job settings): refused, with mim's key."""
    for item in parsed:
        key = item.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            instead = next((v for k, v in HYDRA_KEYS.items() if key.startswith(k)), None)
            raise ConfigError(f"{key}: mim composes with Hydra but keeps no hydra section, so "
                              "this would be ignored" + (f"; {instead}" if instead else ""))


def _missing_message(exc: MissingConfigException) -> str:
    text = str(exc)
    found = re.search(r"Could not find '([^']+)/([^']+)'", text) or re.search(
        r"Could not load '([^']+)/([^']+)'", text)
    if found:
        group, choice = found.groups()
        group = group.lstrip("/")
        return unknown_option(group, choice, _group_options(group))
    return " ".join(text.split())


def _valid_keys(parent: str, overrides: list[str]) -> list[str]:
    # only group choices (model=..., experiment=...): a bad top-level key (bogus=1) would fail
    choices = [o for o in overrides if "=" in o and o.split("=", 1)[0] in GROUPS]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="mim"):
            base = hydra_compose(config_name="config", overrides=choices)
        node = OmegaConf.select(base, parent) if parent else base
        return sorted(node.keys()) if isinstance(node, DictConfig) else []
    except Exception:  # listing is best effort; the key itself is already named
        return []
    finally:
        GlobalHydra.instance().clear()


def _plugin(cls: Any, node: dict[str, Any], section: str) -> Plugin:
    """A backend's or launcher's parameters as its ``Config`` dataclass (types and the
    dataclass's own checks), before any process or model exists."""
    params = {k: v for k, v in node.items() if k != "name"}
    config = getattr(cls, "Config", None)
    if config is None:
        if params:  # the class takes no parameters
            raise ConfigError(unknown_key(f"{section}.{sorted(params)[0]}", []))
        return Plugin(node["name"])
    return Plugin(node["name"], typed(config, params, section))


def policy_params(modality: Any, name: str, params: dict) -> dict:
    """The mask's parameters less the modality's ``mask_defaults`` that the policy ``name``
    has no field for (audio's ratio under mask=time_freq), where they still hold the
    modality's value; a value set otherwise is the policy's to refuse."""
    fields = {f.name for f in dataclasses.fields(MASKS.get(name))}
    return {k: v for k, v in params.items()
            if k in fields or modality.mask_defaults.get(k, object()) != v}


def validate(raw: DictConfig) -> RunSpec:
    """Check every section of a composed config; the first problem -> ConfigError."""
    expected = {"seed", "tracker", "train", "optim", "run", "model", "mask", "modality", "data",
                "backend", "launcher"}
    check_keys(raw.keys(), expected)
    plain_tree = plain(raw, "")
    try:
        modality = MODALITIES.get(plain_tree["modality"]["name"])
        mask_params = dict(plain_tree["mask"])
        mask_name = mask_params.pop("name")
        kept = policy_params(modality, mask_name, mask_params)
        with open_dict(raw):  # config.yaml holds the parameters the policy took
            for key in set(mask_params) - set(kept):
                del raw.mask[key]
        mask = build_mask(mask_name, **kept)
        backend, launcher = plain_tree["backend"], plain_tree["launcher"]
        BACKENDS.get(backend["name"])
        LAUNCHERS.get(launcher["name"])
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    except MaskConfigError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mask: {exc}") from None
    data = typed(modality.data_config, plain_tree["data"], "data")
    model_tree = plain_tree["model"]
    if model_tree.get("pos_embed") == "learned" and model_tree.get("pos_grid") is None:
        raise ConfigError(_pos_grid_hint(model_tree, modality, data))
    spec = RunSpec(
        raw=raw,
        trackers=_trackers(plain_tree["tracker"]),
        seed=integer("seed", plain_tree["seed"]),
        train=typed(TrainConfig, plain_tree["train"], "train"),
        optim=typed(OptimConfig, plain_tree["optim"], "optim"),
        run=typed(RunConfig, plain_tree["run"], "run"),
        model=typed(ModelConfig, plain_tree["model"], "model"),
        mask=mask,
        modality=modality,
        data=data,
        backend=_plugin(BACKENDS.get(backend["name"]), backend, "backend"),
        launcher=_plugin(LAUNCHERS.get(launcher["name"]), launcher, "launcher"),
    )
    # the tokenizer's section complete, defaults in, as the model reads it (config.yaml, --cfg)
    with open_dict(raw):
        raw.model.tokenizer = spec.model.tokenizer
    BACKENDS.get(backend["name"]).check_run(spec.train, spec.backend.config, world_size(spec))
    # the files are read last, every other key checked first
    notes: list[str] = []  # what the files decided, logged by the run (train.log)
    spec.data = data = resolved_data(modality.resolve_data, data, raw, notes)
    with _noted(notes):
        _data_wavelengths(spec, raw)
    if spec.model.coords != "none" and not spec.modality.derived(spec.data).get("coords"):
        raise ConfigError(f"model.coords: '{spec.model.coords}' needs each sample's dates and "
                          "place, which this data does not give (image rasters: "
                          "data.coords=true)")
    spec.notes = tuple(notes)
    spec.grid, spec.mask_grid = token_grid(spec)
    spec.stage_grids = resolution.check(spec.model, spec.mask, resolution.stage_shapes(spec),
                                        tuple(modality.sample_shape(data)))
    return spec


class _Notes(logging.Handler):
    """Collects what mim's loggers say, as one line each (a warning marked so)."""

    def __init__(self, into: list[str]):
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.into.append(f"warning: {text}" if record.levelno >= logging.WARNING else text)


@contextlib.contextmanager
def _noted(into: list[str] | None):
    """What mim logs inside, held in ``into`` (None: logged as usual): validation runs before
    the run's log exists, and the run logs its notes into train.log first."""
    if into is None:
        yield
        return
    logger = logging.getLogger("mim")
    handler, level, propagate = _Notes(into), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def resolved_data(resolve: Any, data: Any, raw: DictConfig | None = None,
                  notes: list[str] | None = None) -> Any:
    """``data`` with what its files decide (``resolve``: ``ModalitySpec.resolve_data`` or
    ``EvalSupport.resolve``, None: as it is), the changed keys written back into ``raw``'s data
    section; the files' problems as one-line ConfigErrors; what resolving logs goes into
    ``notes`` when given."""
    if resolve is None:
        return data
    try:
        with _noted(notes):
            out = resolve(data)
    except FileNotFoundError as exc:  # a data.root that is missing or holds no usable files
        raise ConfigError(str(exc)) from None
    except ValueError as exc:
        text = str(exc).splitlines()[0]
        raise ConfigError(text if text.startswith("data") else f"data: {text}") from None
    if raw is not None:
        changed = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)
                   if getattr(out, f.name) != getattr(data, f.name)}
        with open_dict(raw):
            for key, value in changed.items():
                raw.data[key] = value
    return out


def _data_wavelengths(spec: RunSpec, raw: DictConfig) -> None:
    """A tokenizer whose ``wavelengths`` (µm per band: spectral2d) are left empty takes the
    data's, as the modality's derived values give them for the sample's bands, and says so."""
    section = spec.model.tokenizer
    if "wavelengths" not in section or section["wavelengths"]:
        return
    waves = spec.modality.derived(spec.data).get("wavelengths") or []
    if waves:
        spec.model.tokenizer = {**section, "wavelengths": list(waves)}
        with open_dict(raw):
            raw.model.tokenizer.wavelengths = list(waves)
        log.info("model.tokenizer.wavelengths: the data's, %s", list(waves))


def world_size(spec: RunSpec) -> int:
    """Processes the launcher starts, as it says (``Launcher.world_size``), known before any
    process group exists."""
    return int(LAUNCHERS.get(spec.launcher.name).world_size(spec.launcher.config))


def _pos_grid_hint(model_tree: dict, modality: Any, data: Any) -> str:
    """The one-line error for a learned table without its grid, with the grid this model and
    this data need (the model checked with the default table first: other errors come first)."""
    model = typed(ModelConfig, {**model_tree, "pos_embed": "joint"}, "model")
    shape = tuple(modality.sample_shape(data))  # (C, *spatial)
    try:
        grid, _ = token_grids(model, shape)
    except (UnknownNameError, ValueError):
        return ("model.pos_grid: model.pos_embed=learned needs the grid of its table: set "
                "model.pos_grid=[...] to the token grid (input size / patch size per axis)")
    return (f"model.pos_grid: model.pos_embed=learned needs the grid of its table: set "
            f"model.pos_grid=[{','.join(map(str, grid))}] (the token grid of an input "
            f"{list(shape[1:])} with model.patch_size={model.patch_size}"
            + (f", model.tubelet_size={model.tubelet_size}" if len(grid) == 3 else "") + ")")


def _trackers(value: Any) -> tuple[str, ...]:
    """``tracker=NAME`` or ``tracker=[A,B]`` (``[]``: none) -> the registered names."""
    names = [value] if isinstance(value, str) else list(value or [])
    for name in names:
        if not isinstance(name, str) or name not in TRACKERS:
            raise ConfigError(f"tracker: unknown '{name}'; valid: {', '.join(TRACKERS.names())} "
                              "(one, or a list such as tracker=[tensorboard,mlflow])")
    return tuple(dict.fromkeys(names))


def token_grid(spec: RunSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the token grid of this config's samples, the grid its masks are drawn on), checked
    against the tokenizer and the mask policy (the two differ for a hybrid tokenizer that masks
    its input cells, ``model.tokenizer.mask_level=input``)."""
    shape = tuple(spec.modality.sample_shape(spec.data))  # (C, *spatial)
    try:
        grid, mask_grid = token_grids(spec.model, shape)
    except UnknownNameError as exc:
        raise ConfigError(f"model.tokenizer: {exc}") from None
    except ValueError as exc:  # the sample size does not fit the patch or cube size
        if str(exc).startswith(("model.", "data.")):  # a tokenizer's check names its key
            raise ConfigError(str(exc).splitlines()[0]) from None
        spatial_ok = all(n % spec.model.patch_size == 0 for n in shape[-2:])
        if len(shape) == 4 and spatial_ok:  # only the leading (frames / depth) axis is off
            raise ConfigError(f"data: {shape[1]} frames (or slices) are not a multiple of "
                              f"model.tubelet_size={spec.model.tubelet_size}") from None
        raise ConfigError(f"data.input_size: {exc} (model.patch_size="
                          f"{spec.model.patch_size})") from None
    try:
        spec.mask.check(mask_grid)
        check_decoder_grid(spec.model, grid, spec.mask)  # model.decoder_window's windows
    except ValueError as exc:  # MaskConfigError included
        raise ConfigError(str(exc)) from None
    return grid, mask_grid


def compose_run(overrides: list[str]) -> tuple[DictConfig, tuple[str, ...]]:
    """The config of a command line, and what was adapted to it: a run that names no data of
    its own (the modality's built-in demo data) and chooses no experiment takes the modality's
    ``demo_experiment``, sized for that data (MAE's full recipe does not fit 26 photos); the
    command line's own values still win over it."""
    raw = compose(overrides)
    try:
        modality = MODALITIES.get(OmegaConf.select(raw, "modality.name"))
    except UnknownNameError:  # validate() names it
        return raw, ()
    chosen = any(o.key_or_group == "experiment" for o in parse(overrides)[1])
    if chosen or modality.demo_experiment is None:
        return raw, ()
    if not modality.uses_builtin_data(typed(modality.data_config, plain(raw.data, "data"),
                                            "data")):
        return raw, ()
    demo = compose([*overrides, f"experiment={modality.demo_experiment}"])
    t = demo.train
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
    return demo, (f"data: none given, so modality={modality.name} trains on its built-in demo "
                  f"data with experiment={modality.demo_experiment}'s settings "
                  f"({demo.model.name}, batch {t.batch_size}, {length}); give your data "
                  "(data.root=...) to train the modality's full recipe",)


def checked(raw: DictConfig, overrides: list[str], notes: tuple[str, ...] = ()) -> RunSpec:
    """``validate`` of a composed ``raw``, with the command line and the notes it came with."""
    spec = validate(raw)
    return dataclasses.replace(spec, overrides=tuple(overrides), notes=notes + spec.notes)


def load(overrides: list[str]) -> RunSpec:
    """The validated run of a command line (``compose_run``, then ``validate``)."""
    raw, notes = compose_run(overrides)
    return checked(raw, overrides, notes)


__all__ = ["compose", "validate", "load", "RunSpec", "ConfigError", "ALL"]
