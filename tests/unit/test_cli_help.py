"""``mim COMMAND --help``, ``mim train ... --cfg``, ``mim --version`` and ``mim plugins``.

The help text is generated from the schemas: every key of every section a command reads must
appear with its default and a meaning (the comment on its field), so a new key without one
fails here.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Optional

import pytest

from mim.cli import main
from mim.config.help import meanings, show
from mim.helptext import eval_sections, train_sections, visualize_sections

FAST = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=48",
        "model.depth=2", "model.num_heads=3", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=8",
        "train.num_workers=0", "train.precision=fp32"]
SECTIONS = {"train": train_sections, "eval": eval_sections, "visualize": visualize_sections}


@dataclasses.dataclass
class Documented:
    trailing: int = 1  # on the line
    # above the field,
    # over two lines
    above: Optional[str] = None
    bare: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


def test_a_meaning_is_the_comment_on_or_above_the_field() -> None:
    assert meanings(Documented) == {"trailing": "on the line",
                                    "above": "above the field, over two lines", "bare": ""}


def test_the_help_of_a_model_choice_names_every_value() -> None:
    from mim.models.factory import ModelConfig
    from mim.models.model import CHOICES

    help_text = meanings(ModelConfig)
    for key, values in CHOICES.items():
        missing = [v for v in values if not re.search(rf"\b{re.escape(v)}\b", help_text[key])]
        assert not missing, f"model.{key}'s help does not name {missing}: {help_text[key]!r}"


def _leaves(cls: type, prefix: str) -> list[tuple[str, object, type, str]]:
    """(key, default, owning dataclass, field name) of every key under ``cls``."""
    out = []
    for field in dataclasses.fields(cls):
        default = (field.default if field.default is not dataclasses.MISSING else
                   field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        if dataclasses.is_dataclass(default):
            out += _leaves(type(default), f"{prefix}{field.name}.")
        else:
            out.append((f"{prefix}{field.name}", default, cls, field.name))
    return out


@pytest.mark.parametrize("command", sorted(SECTIONS))
def test_help_lists_every_key_with_its_default_and_a_meaning(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    undocumented = []
    for title, cls, prefix in SECTIONS[command]():
        if cls is None:
            continue
        for key, default, owner, name in _leaves(cls, prefix):
            if key in ("train", "run", "mask.name") or (prefix == "mask." and name == "name"):
                continue  # sections of their own; a mask's name is its group option
            if not meanings(owner).get(name):
                undocumented.append(f"{owner.__qualname__}.{name}")
            words = [line.split() for line in lines]
            assert any(w[:1] == [key] and show(default) in w for w in words), (title, key)
    assert not undocumented, f"fields without a meaning (a comment on the field): {undocumented}"


def test_train_help_names_the_groups_and_their_options(capsys) -> None:
    assert main(["train", "--help"]) == 0
    # a group's options: its line and the indented lines it wraps onto
    listing = re.sub(r"\n {4}(?=\S)", " ", capsys.readouterr().out)
    for group, option in [("modality", "video"), ("model", "mae_vit_tiny_patch16"),
                          ("mask", "tube"), ("backend", "deepspeed"), ("launcher", "slurm"),
                          ("experiment", "demo"), ("data", "volume"), ("tracker", "mlflow"),
                          ("tracker", "wandb"), ("tracker", "tensorboard*")]:
        line = next(x for x in listing.splitlines() if x.startswith(f"  {group}: "))
        assert option in line.split(": ", 1)[1].replace(",", " ").split(), line
    assert "backend.zero_stage" in listing and "launcher.nprocs" in listing


def test_train_help_runs_as_a_command() -> None:
    result = subprocess.run([sys.executable, "-m", "mim", "train", "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train.batch_size" in result.stdout and "Traceback" not in result.stderr


def test_cfg_prints_the_config_and_derived_values_and_writes_nothing(tmp_path: Path,
                                                                      monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["train", *FAST, "optim.lr=null", "optim.blr=1e-3", "train.accum_steps=2",
                 f"run.dir={run}", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 8" in out  # the composed config
    derived = {key: json.loads(value) for key, value in
               (line.split(": ", 1) for line in out.split("# derived")[1].splitlines()[1:])}
    assert derived["lr"] == pytest.approx(1e-3 * 8 * 2 / 256)  # blr x effective batch / 256
    assert derived["grid"] == [4, 4] and derived["tokens"] == 16
    assert derived["masked_tokens"] == 12  # 0.75 of 16
    assert derived["total_steps"] == 300 and derived["warmup_steps"] == 20  # experiment=demo
    assert derived["encoder_params"] > 0 and derived["precision"].startswith("fp32")
    assert derived["run_dir"] == str(run)
    assert not run.exists() and list(tmp_path.iterdir()) == []  # nothing written


def test_cfg_of_a_bad_config_is_a_config_error(capsys) -> None:
    assert main(["train", "train.batch_size=0", "--cfg"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert main(["train", "-m", "seed=1,2", "--cfg"]) == 2
    assert capsys.readouterr().err.startswith("mim: config error: --cfg: shows one run")


@pytest.mark.parametrize("modality", ["image", "video"])
def test_the_missions_commands_show_their_config(modality, tmp_path, monkeypatch, capsys):
    """``mim train modality=X --cfg`` with nothing else: the built-in data's run, said so."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"modality={modality}", "--cfg"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"# data: none given, so modality={modality} trains on its "
                            "built-in demo data with experiment=") and "batch" in first
    assert "# derived" in out and list(tmp_path.iterdir()) == []


def test_cfg_prints_the_config_before_the_refusal(tmp_path, capsys) -> None:
    """A config that composes but would be refused: the config, then the one refusal line."""
    folder = tmp_path / "three"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.png").write_bytes(_png())
    assert main(["train", f"data.root={folder}", "--cfg"]) == 2  # a batch of 64, 3 images
    out, err = capsys.readouterr()
    assert out.startswith("# config\n") and "batch_size: 64" in out and "# derived" not in out
    lines = err.strip().splitlines()
    assert lines[-1].startswith("mim: config error: train.batch_size: a global batch of 64 is "
                                "larger than the dataset (3 items)")


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("flag", [["--cfg", "job"], ["--cfg=all"], ["-c", "job"]])
def test_cfg_takes_hydras_forms(flag, capsys) -> None:
    assert main(["train", *FAST, *flag]) == 0
    assert "# derived" in capsys.readouterr().out
    assert main(["train", *FAST, "--cfg", "hydra"]) == 2
    assert "--cfg hydra: mim composes with Hydra but keeps no hydra section" in \
        capsys.readouterr().err


@pytest.mark.parametrize("habit, says", [
    (["--resolve"], "--resolve: not an option; mim commands take key=value overrides"),
    (["-cn", "other"], "-cn: not an option"),
    (["hydra.run.dir=/tmp/x"], "hydra.run.dir: mim composes with Hydra but keeps no hydra "
                               "section, so this would be ignored; the run's folder is run.dir"),
    (["hydra.job.chdir=true"], "hydra.job.chdir: mim composes with Hydra but keeps no hydra "
                               "section"),
])
def test_hydra_habits_get_mims_remedy(habit, says, capsys) -> None:
    for command in (["train", *FAST, *habit], ["train", *FAST, *habit, "--cfg"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mim: config error: {says}") and err.count("\n") == 1, err


@pytest.mark.parametrize("settings, says", [
    (["backend=deepspeed", "train.nonfinite=skip"],
     "train.nonfinite: 'skip' is not supported by backend=deepspeed; valid there: stop"),
    (["backend=deepspeed", "backend.zero_stage=3", "train.compile=blocks"],
     "train.compile: 'blocks' is not supported with backend.zero_stage=3"),
    (["backend=xla", "train.compile=blocks"], "train.compile: not supported with backend=xla"),
    (["backend=xla", "backend.sharding=data", "train.batch_size=6"],
     "train.batch_size: 6 (per host) does not split over this host's 4 XLA devices"),
    (["backend=xla", "launcher.nprocs=2"], "backend=xla: with backend.sharding=none it runs one"),
])
def test_cfg_refuses_what_the_backend_cannot_run_as_the_run_does(settings, says, monkeypatch,
                                                                  capsys) -> None:
    """Settings of two sections that the backend refuses: refused by validation, so --cfg and a
    run stop alike, before any process, model or backend exists."""
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "4")
    fast = [o for o in FAST if o.split("=")[0] not in {s.split("=")[0] for s in settings}]
    for command in (["train", *fast, *settings, "--cfg"], ["train", *fast, *settings]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"mim: config error: {says}"), err


def test_version_is_the_installed_one(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mim {version('mim-pretrain')}"


@pytest.mark.parametrize("command", ["convert", "plugins"])
def test_every_command_has_help(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f"mim {command}" in out


def test_plugins_columns_fit_the_longest_name(capsys) -> None:
    main(["plugins"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    starts = set()
    for row in rows:
        name = row.split()[0]
        source_at = row.index(row.split()[1], 2 + len(name))
        assert source_at >= 2 + len(name) + 2, row  # two spaces at least after every name
        starts.add(source_at)
    assert len(starts) == 1, starts  # one column for every source
    assert any(len(row.split()[0]) >= 28 for row in rows)  # e.g. maest_vit_base_patch16_16x224


def test_cfg_shows_fp16_with_its_loss_scaling(tmp_path, capsys):
    fast = [o for o in FAST if not o.startswith("train.precision=")]
    assert main(["train", *fast, "train.precision=fp16", f"run.dir={tmp_path / 'run'}",
                 "--cfg"]) == 0
    out = capsys.readouterr().out
    assert 'precision: "fp16"\nprecision_reason: "train.precision=fp16, with dynamic loss ' \
        'scaling"' in out
