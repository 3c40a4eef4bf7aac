"""The ``mim`` command (also ``python -m mim``).

  mim train [key=value ...]   pretrain; Hydra overrides, e.g. modality=image model=mae_vit_base_patch16
  mim train -m key=a,b ...    a sweep: one run per point (a Slurm job array with launcher=slurm)
  mim --version               the installed version; `mim COMMAND --help`: its keys and groups
  mim train ... --cfg         print the composed config and derived values; trains nothing
  mim plugins                 list registered tokenizers, masks, models, modalities, backends, launchers
  mim eval knn|linprobe|finetune|segment [key=value ...]
                              evaluate an encoder on labelled data, e.g. run.dir=runs/... (or
                              weights=PATH); eval.init=random for the untrained baseline;
                              segment: a linear, UperNet or UNETR head on label maps
  mim visualize run.dir=RUN input=PATH [mask.ratio=0.75 ...]
                              reconstruction pictures of your own files
  mim convert input=PATH output=PATH to=mim|mae|timm|hf|prithvi|monai [input_size=[224,224]]
              [overwrite=true] [drop_coords=true]
                              weights between mim, facebookresearch/mae, timm, Hugging Face,
                              Prithvi-EO and MONAI (drop_coords: Prithvi's TL weights read without their
                              date and location embeddings, else as model.coords)
                              (output: new or empty, or with overwrite=true an export mim
                              wrote, as its mim-export.json lists; never in a run dir)
  mim data pack input=DIR|LIST output=DIR [shard_size=1000] [max_side=N] [labels=none|folders|CSV]
                              WebDataset shards for data.format=wds, a manifest (overwrite=true)
  mim data stats data.root=DIR [data.bands=[...]] [data.nodata=V] [out=FILE.json]
                              per-band mean, std, min, max, nodata share (data.mean=auto's)

Note: OpenMMLab's ``openmim`` package also installs a command named ``mim``; in an environment
with both, use ``python -m mim``.
"""
from __future__ import annotations

import logging
import os
import sys

USAGE = __doc__.split("\n\n")[1]
EXIT_CONFIG = 2


def _plugins() -> int:
    from mim.plugins import load_plugins
    from mim.registry import ALL

    errors = load_plugins()
    # as wide as the longest name, so no name runs into its source
    width = max((len(e.name) for r in ALL.values() for e in r.entries()), default=0) + 2
    for kind, registry in ALL.items():
        print(f"{kind}:")
        for entry in registry.entries():
            print(f"  {entry.name:<{width}}{entry.source}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _train(overrides: list[str]) -> int:
    from mim.config import ConfigError
    from mim.config.compose import load
    from mim.config.sweep import expand_sweep, own_run_dirs
    from mim.data.failures import DataLoadError
    from mim.engine.checkpoint import CheckpointError, Checkpoints
    from mim.engine.loop import NonFiniteLossError
    from mim.plugins import load_plugins
    from mim.registry import LAUNCHERS
    from mim.rundir import check_run_dir
    from mim.rundir import run_dir

    for error in load_plugins():
        print(f"mim: warning: {error}", file=sys.stderr)
    current = []  # the run being launched: what an OSError can say about its checkpoints
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    overrides = [a for a in overrides if a not in ("-m", "--multirun")]
    try:
        # every point of a sweep is checked before any of them starts
        points = expand_sweep(overrides) if multirun else [overrides]
        specs = [load(point) for point in points]
        if len(specs) > 1:
            specs = own_run_dirs(points, specs, load)
        for spec in specs:  # before any process starts; train() checks again in every rank
            check_run_dir(run_dir(spec))
        names = {spec.launcher.name for spec in specs}
        if len(names) > 1:
            raise ConfigError(f"launcher: a sweep must use one launcher, got {sorted(names)}")
        launcher = LAUNCHERS.get(names.pop())()
        current[:] = [run_dir(spec) for spec in specs]
        if multirun:
            launcher.launch_sweep(specs)
        else:
            launcher.launch(specs[0])
    except ConfigError as exc:
        print(f"mim: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (NonFiniteLossError, CheckpointError, DataLoadError) as exc:
        _to_run_log(f"{exc}")  # the console gets it once, below
        print(f"mim: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the run directory became unwritable outside a checkpoint
        run = next((r for r in current if str(exc.filename or "").startswith(str(r))),
                   current[0] if current else None)  # a sweep's point the error names
        latest = Checkpoints(run / "checkpoints").latest() if run else None
        after = (f"the last checkpoint ({latest.name}) is intact: fix the cause, then run the "
                 "same command to resume" if latest else "no checkpoint was written: fix the "
                 "cause, then run the same command to start")
        print(f"mim: error: {exc.strerror or exc}: {exc.filename or ''}; {after}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mim: interrupted; run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


def _to_run_log(message: str) -> None:
    """Record why a run stopped in its train.log (the file handlers of mim's log) only: the
    console already gets the one ``mim: error:`` line."""
    logger = logging.getLogger("mim")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _log_to_stderr(level: int = logging.INFO) -> None:
    root = logging.getLogger("mim")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False


def _guarded(work) -> int:
    """Run ``work()``: a config error exits 2 (nothing computed), a failure 1, Ctrl-C 130."""
    from mim.config import ConfigError
    from mim.convert import ConvertError
    from mim.plugins import load_plugins

    for error in load_plugins():
        print(f"mim: warning: {error}", file=sys.stderr)
    _log_to_stderr()
    try:
        work()
    except ConfigError as exc:
        print(f"mim: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ConvertError, FloatingPointError, OSError, ValueError) as exc:
        print(f"mim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mim: interrupted", file=sys.stderr)
        return 130
    return 0


def _eval(args: list[str]) -> int:
    from mim.config import ConfigError
    from mim.eval import evaluate, load_eval, summary

    def work() -> None:
        if not args or "=" in args[0]:
            raise ConfigError("protocol: mim eval knn|linprobe|finetune|segment [key=value ...]")
        print(summary(evaluate(load_eval(args[0], args[1:]))))

    return _guarded(work)


def _visualize(args: list[str]) -> int:
    from mim.visualize import load_visualize, visualize

    def work() -> None:
        for path in visualize(load_visualize(args)):
            print(path)

    return _guarded(work)


def _convert_config(args: list[str]) -> dict:
    """``mim convert``'s command line, read in the grammar of every command, and checked."""
    from mim.config import ConfigError
    from mim.config.overrides import apply, parse, plain
    from mim.convert import WRITERS

    tree = {"input": None, "output": None, "to": None, "input_size": None, "overwrite": False,
            "drop_coords": False, "model": {}}
    config = plain(apply(tree, parse(args)[1], open_keys=("model",)), "")
    to = config["to"]
    if to not in WRITERS:
        raise ConfigError(f"to: {'required' if to is None else f'unknown format {to!r}'}; "
                          f"valid: {', '.join(WRITERS)}")
    for key in ("input", "output"):
        if config[key] is None:
            raise ConfigError(f"{key}: required (mim convert input=PATH output=PATH to=...)")
    for key in ("overwrite", "drop_coords"):
        if not isinstance(config[key], bool):
            raise ConfigError(f"{key}: {config[key]!r} is not one of: true, false")
    if not isinstance(config["model"], dict):
        raise ConfigError("model: convert takes model.<key>=VALUE (ModelConfig fields)")
    size = config["input_size"]
    sizes = [size] * 2 if isinstance(size, int) else size
    if sizes is not None and not (isinstance(sizes, list) and sizes and all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise ConfigError(f"input_size: {size!r} is not a size; give positive integers: "
                          "input_size=224 or input_size=[224,224] (spatial sizes)")
    config["input_size"] = sizes
    return config


def _convert(args: list[str]) -> int:
    from mim.convert import convert

    def work() -> None:
        c = _convert_config(args)
        print(convert(str(c["input"]), str(c["output"]), c["to"], c["input_size"],
                      c["overwrite"], c["drop_coords"], **c["model"]))

    return _guarded(work)


def _data(args: list[str]) -> int:
    if args and args[0] == "stats":
        from mim.data.stats import stats_command

        return _guarded(lambda: print(stats_command(args[1:])))
    from mim.data.pack import pack_command

    return _guarded(lambda: print(pack_command(args)))


# Hydra's flag for printing the config, and the parts it names; mim has no ``hydra`` section
CFG_FLAGS = ("--cfg", "-c")
CFG_PARTS = ("job", "all", "hydra")


def _cfg_request(args: list[str]) -> tuple[bool, list[str]]:
    """(whether ``mim train`` was asked for its config, the overrides without the flag):
    ``--cfg``, ``--cfg job`` (or ``all``), ``--cfg=job``, ``-c job``, as Hydra accepts them."""
    from mim.config.errors import ConfigError

    rest, asked, i = [], False, 0
    while i < len(args):
        flag, _, part = args[i].partition("=")
        if flag in CFG_FLAGS:
            asked = True
            if not part and i + 1 < len(args) and args[i + 1] in CFG_PARTS:
                part, i = args[i + 1], i + 1
            if part == "hydra":
                raise ConfigError("--cfg hydra: mim composes with Hydra but keeps no hydra "
                                  "section (no output folder, no job settings); --cfg, or "
                                  "--cfg job, prints the run's config")
            if part and part not in CFG_PARTS:
                raise ConfigError(f"--cfg: '{part}' is not one of: job, all (or --cfg alone)")
        else:
            rest.append(args[i])
        i += 1
    return asked, rest


def _show_config(overrides: list[str]) -> int:
    """``mim train ... --cfg``: the composed config, then the derived values, or the one line
    saying why the config would be refused (exit 2); nothing trained."""
    from mim.config import ConfigError
    from mim.config.compose import checked, compose_run
    from mim.plugins import load_plugins
    from mim.preview import config_text, derived_text

    for error in load_plugins():
        print(f"mim: warning: {error}", file=sys.stderr)
    _log_to_stderr(logging.WARNING)  # what indexing the data or planning the run warns about
    try:
        if any(a in ("-m", "--multirun") for a in overrides):
            raise ConfigError("--cfg: shows one run; drop -m and give one point of the sweep")
        raw, notes = compose_run(overrides)
        print(config_text(raw, notes), flush=True)  # shown also when validation refuses it
        print(derived_text(checked(raw, overrides, notes)))
    except ConfigError as exc:
        print(f"mim: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError) as exc:  # e.g. unreadable data while indexing it
        print(f"mim: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import mim  # noqa: F401  (torchvision compatibility before anything imports timm)

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else EXIT_CONFIG
    if args[0] in ("-V", "--version"):
        from mim.helptext import version

        print(f"mim {version()}")
        return 0
    command, rest = args[0], args[1:]
    if any(a in ("-h", "--help") for a in rest):
        from mim.helptext import command_help

        print(command_help(command, USAGE))
        return 0
    if command == "train":
        from mim.config.errors import ConfigError

        try:
            asked, rest = _cfg_request(rest)
        except ConfigError as exc:
            print(f"mim: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if asked:
            return _show_config(rest)
        return _train(rest)
    if command == "plugins":
        return _plugins()
    commands = {"eval": _eval, "visualize": _visualize, "convert": _convert, "data": _data}
    if command in commands:
        return commands[command](rest)
    print(f"mim: unknown command '{command}'; valid: train, plugins, {', '.join(commands)}",
          file=sys.stderr)
    return EXIT_CONFIG


def finish(code: int) -> None:
    """End the ``mim`` process with ``code``; a rank of a process group that finished cleanly
    skips interpreter teardown (``os._exit`` after flushing), where third-party threads torn
    down at exit have aborted a finished DeepSpeed rank (SIGABRT) and failed its run."""
    if code == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


def command() -> None:
    """The ``mim`` command and ``python -m mim``."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `mim plugins | head -3`: the reader left early
        # no traceback for that, and none at exit when Python flushes stdout again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    finish(code)


if __name__ == "__main__":
    command()
