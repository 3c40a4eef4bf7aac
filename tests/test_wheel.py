"""mim works from a built wheel, not only from the checkout: configs, modalities and launchers
are packaged under ``mim.*`` and found through the installed package. The wheel's requirements
fit every common platform (decord only where it has wheels, DeepSpeed an extra), and an
environment with the base requirements only (no decord, no extras) trains images and video."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.base_env import base_environment

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=demo", "data.input_size=32", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=1", "model.num_heads=2", "model.decoder_embed_dim=32",
        "model.decoder_depth=1", "model.decoder_num_heads=2", "train.batch_size=4",
        "train.num_workers=0", "train.max_steps=2"]
VIDEO = ["modality=video", "experiment=video_demo", "data.input_size=32", "data.num_frames=4",
         "model.patch_size=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
         "model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
         "train.batch_size=4", "train.num_workers=2", "train.max_steps=2", "train.log_every=1"]
# the environment markers of each platform mim is installed on (as pip reports them there)
PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux",
                     "platform_machine": "x86_64", "os_name": "posix"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux",
                      "platform_machine": "aarch64", "os_name": "posix"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin",
                    "platform_machine": "arm64", "os_name": "posix"},
    "windows-amd64": {"sys_platform": "win32", "platform_system": "Windows",
                      "platform_machine": "AMD64", "os_name": "nt"},
}
DECORD_WHEELS = {"linux-x86_64", "windows-amd64"}  # decord 0.6.0's wheels for CPython >= 3.9


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=build,
                   env={**os.environ, "TMPDIR": str(build)})
    (found,) = out.glob("mim_pretrain-*.whl")
    return found


def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def requirements(wheel: Path, platform: str, extra: str = "") -> dict[str, Requirement]:
    """The wheel's requirements that apply on ``platform`` with ``extra`` chosen (the
    self-reference ``mim-pretrain[...]`` of the ``all`` extra expanded)."""
    meta = metadata(wheel)
    env = {**default_environment(), **PLATFORMS[platform], "python_version": "3.11",
           "python_full_version": "3.11.7"}
    chosen = {extra}
    found: dict[str, Requirement] = {}
    while True:
        for line in meta.get_all("Requires-Dist"):
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e})
                                         for e in chosen | {""}):
                found[req.name] = req
        more = found.pop("mim-pretrain", None)
        if more is None or more.extras <= chosen:
            return found
        chosen |= more.extras


@pytest.fixture(scope="module")
def base_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment holding the wheel and its base requirements for this platform only:
    the distributions pip installed here for them, linked (not copied) from this environment."""
    base = requirements(wheel, "linux-x86_64")
    base.pop("decord")  # as on a platform without its wheels
    return base_environment(wheel, list(base.values()), tmp_path_factory.mktemp("base-env"))


def test_wheel_holds_configs_modalities_and_entry_points(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("mim/configs/config.yaml", "mim/configs/experiment/demo.yaml",
                     "mim/modalities/image/__init__.py", "mim/launchers/local.py",
                     "mim/models/model.py"):
        assert required in names, required
    # every module of the three folders installed under mim (the package list is written out)
    for folder, package in (("mim", "mim"), ("modalities", "mim/modalities"),
                            ("launchers", "mim/launchers")):
        for module in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in module.parts:
                installed = f"{package}/{module.relative_to(ROOT / folder).as_posix()}"
                assert installed in names, f"{module} is not in the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[mim.plugins]" in text and "mim.modalities.image" in text


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_requirements_resolve_per_platform(wheel: Path, platform: str) -> None:
    # the markers evaluated as pip evaluates them there; pip's own --platform resolution needs
    # PyPI (decord and DeepSpeed are not in this machine's local index), so it is not run here
    base = requirements(wheel, platform)
    assert ("decord" in base) == (platform in DECORD_WHEELS), sorted(base)
    assert "deepspeed" not in base and {"torch", "timm", "av", "pytorchvideo"} <= set(base)
    assert "deepspeed" in requirements(wheel, platform, "deepspeed")
    everything = requirements(wheel, platform, "all")
    extras = set(metadata(wheel).get_all("Provides-Extra")) - {"all", "test"}
    assert extras == {"bench", "deepspeed", "hf", "nifti", "raster", "monai", "mlflow",
                      "wandb"}
    for extra in extras:
        assert set(requirements(wheel, platform, extra)) <= set(everything), extra
    assert "pytest" not in everything and ("decord" in everything) == ("decord" in base)


def test_train_runs_from_installed_wheel(base_env: Path, tmp_path: Path) -> None:
    python = base_env / "bin" / "python"
    probe = ("import importlib.util as u, mim.configs; print(mim.configs.__file__); "
             "print([m for m in ('decord', 'deepspeed', 'transformers') if u.find_spec(m)])")
    where = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True,
                           text=True, check=True)
    assert where.stdout.split()[0].startswith(str(base_env)), where.stdout
    assert where.stdout.split("\n")[1] == "[]", where.stdout  # none of them installed
    run = subprocess.run([python, "-m", "mim", "train", *TINY, f"run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last" / "state.pt").is_file()


def test_video_falls_back_to_pyav_without_decord(base_env: Path, tmp_path: Path) -> None:
    run = subprocess.run([base_env / "bin" / "python", "-m", "mim", "train", *VIDEO,
                          f"run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ,
                                                      "MIM_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    # said once on the console (the workers start after the dataset resolved it; train.log
    # starts after the data is built), and the clips decoded with PyAV
    assert run.stderr.count("decord cannot be imported here") == 1, run.stderr[-3000:]
    assert "decoder pyav" in run.stderr, run.stderr[-3000:]
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in metrics]
    assert [r["step"] for r in records] == [1, 2] and all(r["skipped"] == 0 for r in records)


def test_deepspeed_without_its_extra_is_one_line(base_env: Path, tmp_path: Path) -> None:
    run = subprocess.run([base_env / "bin" / "python", "-m", "mim", "train", *TINY,
                          "backend=deepspeed", f"run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "pip install 'mim-pretrain[deepspeed]'" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "run").exists()  # stopped before anything was built
