"""mim works from a built wheel, not only from the checkout: configs, modalities and launchers
are packaged under ``mim.*`` and found through the installed package."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=4",
        "train.num_workers=0", "train.max_steps=2"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=build,
                   env={**os.environ, "TMPDIR": str(build)})
    (found,) = out.glob("mim_pretrain-*.whl")
    return found


def test_wheel_holds_configs_modalities_and_entry_points(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("mim/configs/config.yaml", "mim/configs/experiment/demo.yaml",
                     "mim/modalities/image/__init__.py", "mim/launchers/local.py",
                     "mim/model.py"):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[mim.plugins]" in text and "mim.modalities.image" in text


def test_train_runs_from_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import mim.configs; print(mim.configs.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(target)), where.stdout
    run = subprocess.run([sys.executable, "-m", "mim", "train", *TINY,
                          f"run.dir={tmp_path / 'run'}"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last" / "state.pt").is_file()
