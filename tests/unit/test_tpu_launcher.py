"""launcher=tpu: the gcloud command as text (no gcloud here); run=true with subprocess.run mocked."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from mim.cli import main
from mim.config import ConfigError
from mim.config.compose import load
from mim.plugins import load_plugins
from mim.registry import LAUNCHERS

load_plugins()
BASE = ["modality=image", "launcher=tpu", "launcher.tpu_name=my-tpu",
        "launcher.zone=us-central2-b"]
# a space, quotes and shell characters: the remote shell must pass the word on verbatim
USER = ["train.max_steps=7", "run.root='my runs;$x'"]


def _launcher():
    return LAUNCHERS.get("tpu")()


def _remote(argv: list[str]) -> list[str]:
    command = [a for a in argv if a.startswith("--command=")]
    assert len(command) == 1, argv
    return shlex.split(command[0].removeprefix("--command="))


def _train_words(argv):
    words = _remote(argv)
    return words[words.index("python3"):]


def test_command_words(tmp_path, capsys):
    run = str(tmp_path / "shared" / "run 1")
    spec = load([*BASE, "launcher.project=proj-1", "launcher.venv='~/venvs/x'",
                 "+launcher.env.XLA_FLAGS='--xla_a=1 --xla_b'", *USER, f"run.dir={run}"])
    assert _launcher().launch(spec) is None  # run=false: printed only
    out = capsys.readouterr().out
    printed = shlex.split(out.split("\n")[1])
    assert printed[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu",
                           "--zone", "us-central2-b"]
    assert printed[8:10] == ["--project", "proj-1"] and "--worker=all" in printed
    remote = _remote(printed)
    assert remote[:3] == ["cd", "~/mim", "&&"]
    assert remote[3:6] == ["source", "~/venvs/x/bin/activate", "&&"]
    assert "PJRT_DEVICE=TPU" in remote and "XLA_FLAGS=--xla_a=1 --xla_b" in remote
    train = _train_words(printed)
    assert train[:4] == ["python3", "-m", "mim", "train"]
    assert "backend=xla" in train and "launcher=local" in train
    assert "train.max_steps=7" in train and "run.root='my runs;$x'" in train  # quoted, survives
    assert sum(w.startswith("run.dir=") for w in train) == 1
    remote_spec = load(train[4:])  # what each host composes
    assert remote_spec.run.dir == run and remote_spec.launcher.name == "local"
    assert remote_spec.backend.name == "xla" and remote_spec.run.root == "my runs;$x"
    assert not any(w.startswith(("launcher.", "+launcher.", "launcher=tpu")) for w in train)


def test_default_run_dir_pinned_and_warned(capsys):
    spec = load([*BASE, "backend=torch", "train.max_steps=7"])
    argv = _launcher().command(spec)
    train = _train_words(argv)
    pinned = [w for w in train if w.startswith("run.dir=")]
    assert len(pinned) == 1 and pinned[0].startswith("run.dir=runs/image/")
    assert "backend=torch" not in train and "backend=xla" in train
    assert "backend.sharding=data" in train  # a pod needs SPMD: the default the hosts get
    assert "--project" not in argv
    assert "run.dir not set" in capsys.readouterr().err


def test_gs_url_refused():
    spec = load([*BASE, "run.dir=gs://bucket/run"])
    with pytest.raises(ConfigError, match="run.dir"):
        _launcher().command(spec)


def test_run_true_calls_subprocess(monkeypatch, tmp_path):
    calls = []

    def fake_run(argv, *args, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    spec = load([*BASE, "launcher.run=true", "launcher.worker=0", f"run.dir={tmp_path}", *USER])
    launcher = _launcher()
    assert launcher.launch(spec) == tmp_path
    assert calls == [launcher.command(spec)] and "--worker=0" in calls[0]


def test_run_true_failure_raises(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, *a, **k: subprocess.CompletedProcess(argv, 255))
    spec = load([*BASE, "launcher.run=true", f"run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exc:
        _launcher().launch(spec)
    assert exc.value.code == 255
    assert "exited with status 255" in capsys.readouterr().err


@pytest.mark.parametrize("drop, key", [("launcher.tpu_name=my-tpu", "launcher.tpu_name"),
                                       ("launcher.zone=us-central2-b", "launcher.zone")])
def test_missing_required_is_config_error(drop, key):
    with pytest.raises(ConfigError) as exc:
        load([o for o in BASE if o != drop])
    message = str(exc.value)
    assert message.startswith(key) and "\n" not in message


def test_cli_exit_2_names_tpu_name(capsys):
    assert main(["train", "modality=image", "launcher=tpu", "launcher.zone=z"]) == 2
    err = capsys.readouterr().err
    assert "launcher.tpu_name: set the TPU VM name" in err


def test_bad_worker():
    with pytest.raises(ConfigError, match="launcher.worker"):
        load([*BASE, "launcher.worker=some"])


def test_sharding_from_the_command_line_is_kept():
    spec = load([*BASE, "backend=xla", "backend.sharding=fsdp", "train.max_steps=7"])
    train = _train_words(_launcher().command(spec))
    assert [w for w in train if w.startswith("backend.sharding=")] == ["backend.sharding=fsdp"]
    assert load(train[4:]).backend.config.sharding == "fsdp"
