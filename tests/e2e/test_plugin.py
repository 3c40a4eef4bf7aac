"""A third-party modality (tests/plugins/mim_spectro) installed with pip into a fresh virtualenv
is found through the ``mim.plugins`` entry point alone, listed, and trains, config file included.

The fresh venv reuses this interpreter's packages (torch, the editable mim) instead of
installing them: ``--system-site-packages`` only exposes the *base* interpreter's site-packages
(pyenv's, not this venv's), so a ``.pth`` file in the new venv adds this environment's
site-packages with ``site.addsitedir`` (which also runs its ``.pth`` files, among them the
editable-install finder of mim).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugins" / "mim_spectro"
DIST = "mim-spectro"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=timeout)
    assert result.returncode == 0, (f"{cmd} -> exit {result.returncode}\n{result.stdout[-3000:]}"
                                    f"\n{result.stderr[-5000:]}")
    return result


def _probe(python: Path, cwd: Path, env: dict[str, str]) -> dict:
    """What the interpreter sees: its prefix, where mim comes from, the mim.plugins entries."""
    code = (
        "import importlib.metadata as md, json, sys, mim\n"
        "eps = md.entry_points(group='mim.plugins')\n"
        "print(json.dumps({'prefix': sys.prefix, 'mim': mim.__file__,\n"
        "  'plugins': {ep.name: [ep.value, ep.dist.name if ep.dist else None] for ep in eps}}))\n"
    )
    return json.loads(_run([python, "-c", code], cwd, env).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("plugin")
    env_dir, work, tmp = base / "venv", base / "work", base / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env.update(TMPDIR=str(tmp), PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")

    # a copy of the plugin, so that building it leaves nothing (build/, *.egg-info) in the repo
    src = base / "src" / "mim_spectro"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", "*.pyc"))

    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir],
         work, env)
    python = env_dir / "bin" / "python"
    ours = sysconfig.get_paths()["purelib"]  # this environment's site-packages (mim, torch)
    theirs = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  work, env).stdout.strip()
    assert Path(theirs).is_dir() and Path(theirs) != Path(ours)
    (Path(theirs) / "_mim_test_parent_env.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n")

    before = _probe(python, work, env)
    assert Path(before["prefix"]) == env_dir, before  # really the new venv
    assert before["plugins"].get("image", [None])[0] == "mim.modalities.image", before
    assert "spectro" not in before["plugins"], before

    pip = [python, "-m", "pip"]
    if subprocess.run([*pip, "--version"], capture_output=True, cwd=work, env=env).returncode:
        _run([python, "-m", "ensurepip", "--default-pip"], work, env)  # no pip to borrow
    _run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", src],
         work, env)

    after = _probe(python, work, env)
    assert after["plugins"].get("spectro") == ["mim_spectro", DIST], after
    assert after["plugins"].get("image") == ["mim.modalities.image", "mim-pretrain"], after
    assert after["mim"] == before["mim"]
    return {"python": python, "site": Path(theirs), "env": env, "work": work, "src": src}


def test_plugin_is_installed_as_a_package(plugin_env: dict) -> None:
    site = plugin_env["site"]
    package = site / "mim_spectro"
    assert (package / "__init__.py").is_file(), sorted(p.name for p in site.iterdir())
    assert (package / "configs" / "experiment" / "spectro_tiny.yaml").is_file()
    (dist_info,) = site.glob("mim_spectro-*.dist-info")
    assert "mim_spectro/__init__.py" in (dist_info / "RECORD").read_text()
    # not editable: nothing in the new venv points back at the source copy
    assert not list(site.glob("__editable__*mim_spectro*"))
    assert not list(plugin_env["src"].glob("*.egg-link"))
    # pip touched nothing but the plugin: no torch, numpy or mim in the new venv
    assert {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")} == {"mim_spectro"}


def test_plugins_lists_spectro_from_its_distribution(plugin_env: dict, cli) -> None:
    result = cli.run("plugins", python=plugin_env["python"], env=plugin_env["env"])
    assert result.returncode == 0, cli.describe(result)
    assert "error" not in result.stderr, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        if line.startswith("  "):
            name, source = line.split(None, 1)
            rows[name] = source.strip()
    assert rows.get("spectro") == f"{DIST} (plugin)", result.stdout
    assert rows.get("image") == "mim (built-in)", result.stdout
    assert rows.get("patch2d") == "mim (built-in)", result.stdout


def test_spectro_trains_with_its_own_experiment_config(plugin_env: dict, cli,
                                                       tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = cli.run("train", "modality=spectro", "experiment=spectro_tiny",
                     "train.max_steps=3", f"run.dir={run}",
                     python=plugin_env["python"], env=plugin_env["env"])
    assert result.returncode == 0, cli.describe(result)

    derived = json.loads((run / "derived.json").read_text())
    assert derived["grid"] == [4, 4]  # 32 px, patch 8: the experiment file was applied
    assert derived["total_steps"] == 3
    assert derived["dataset_items"] == 24  # the plugin's generated demo spectrograms
    config = (run / "config.yaml").read_text()
    assert "name: spectro" in config and "log_scale: true" in config, config
    assert [r["step"] for r in cli.metrics(run)] == [1, 2, 3]
    assert (run / "checkpoints" / "last" / "state.pt").is_file()

    # the tokenizer was built for one channel: patch embedding weight [D, 1, 8, 8]
    import torch
    state = torch.load(run / "checkpoints" / "last" / "state.pt", map_location="cpu",
                       weights_only=True)
    proj = [t for name, t in state["model"].items() if name.endswith("proj.weight")]
    assert proj and tuple(proj[0].shape) == (48, 1, 8, 8), [tuple(t.shape) for t in proj]

    (picture,) = sorted((run / "pictures").glob("*.png"))
    with Image.open(picture) as image:
        assert image.mode == "L"
        # 3 samples (vis_samples in spectro_tiny) x 4 columns of 32 px tiles, 2 px gaps
        assert image.size == (4 * 32 + 3 * 2, 3 * 32 + 2 * 2)
    demo = Path(plugin_env["env"]["TMPDIR"]) / "mim_spectro_demo_v1_24"
    assert len(list(demo.glob("*.npy"))) == 24  # generated under TMPDIR, not in the repo


def test_without_the_plugin_spectro_is_unknown(cli, tmp_path: Path) -> None:
    """The guard against a test that passes for the wrong reason: mim alone has no spectro."""
    result = cli.run("train", "modality=spectro", f"run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, cli.describe(result)
    assert result.stderr.startswith("mim: config error: modality: unknown option 'spectro'")
