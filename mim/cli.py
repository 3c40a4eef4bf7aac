"""The ``mim`` command (also ``python -m mim``).

  mim train [key=value ...]   pretrain; Hydra overrides, e.g. modality=image model=mae_vit_base_patch16
  mim train -m key=a,b ...    a sweep: one run per point (a Slurm job array with launcher=slurm)
  mim plugins                 list registered tokenizers, masks, models, modalities, backends, launchers

Note: OpenMMLab's ``openmim`` package also installs a command named ``mim``; in an environment
with both, use ``python -m mim``.
"""
from __future__ import annotations

import logging
import sys

USAGE = __doc__.split("\n\n")[1]
EXIT_CONFIG = 2


def _plugins() -> int:
    from mim.registry import ALL, load_plugins

    errors = load_plugins()
    for kind, registry in ALL.items():
        print(f"{kind}:")
        for entry in registry.entries():
            print(f"  {entry.name:<28} {entry.source}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _train(overrides: list[str]) -> int:
    from mim.config import ConfigError
    from mim.config.compose import load
    from mim.config.sweep import expand_sweep
    from mim.engine.checkpoint import CheckpointError
    from mim.engine.loop import DataLoadError, NonFiniteLossError
    from mim.registry import LAUNCHERS, load_plugins

    for error in load_plugins():
        print(f"mim: warning: {error}", file=sys.stderr)
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    overrides = [a for a in overrides if a not in ("-m", "--multirun")]
    try:
        # every point of a sweep is checked before any of them starts
        specs = [load(point) for point in (expand_sweep(overrides) if multirun else [overrides])]
        names = {spec.launcher["name"] for spec in specs}
        if len(names) > 1:
            raise ConfigError(f"launcher: a sweep must use one launcher, got {sorted(names)}")
        launcher = LAUNCHERS.get(names.pop())()
        if multirun and hasattr(launcher, "launch_sweep"):  # e.g. a Slurm job array
            launcher.launch_sweep(specs)
        else:
            for spec in specs:
                launcher.launch(spec)
    except ConfigError as exc:
        print(f"mim: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (NonFiniteLossError, CheckpointError, DataLoadError) as exc:
        logging.getLogger("mim").error("%s", exc)
        print(f"mim: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the run directory became unwritable outside a checkpoint
        print(f"mim: error: {exc.strerror or exc}: {exc.filename or ''}; the last checkpoint "
              "is intact: fix the cause, then run the same command to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mim: interrupted; run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    import mim  # noqa: F401  (torchvision compatibility before anything imports timm)

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else EXIT_CONFIG
    command, rest = args[0], args[1:]
    if command == "train":
        return _train(rest)
    if command == "plugins":
        return _plugins()
    print(f"mim: unknown command '{command}'; valid: train, plugins", file=sys.stderr)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
