"""``bench/gpu_check.sh``, the one-call GPU check, works before a GPU session spends its minutes.

On a lent CUDA machine the script installs mim into a scratch folder with no network and runs
figure 6, the demo with a resume, the demo compiled, the demo in fp16 and figures 1-2. Here it
runs the same parts on the CPU at tiny sizes (``MIM_CHECK_QUICK=1``) with torch.compile off,
from the same install path: mim from the scratch folder, not this tree. Nothing is timed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OUT": str(tmp_path / "out"), "MIM_CHECK_SITE": str(tmp_path / "site"),
            "MIM_CHECK_RUNS": str(tmp_path / "runs"), "MIM_CACHE_DIR": str(tmp_path / "cache"),
            "MIM_CHECK_WHEELS": str(tmp_path / "no-wheels"), "PYTHONWARNINGS": "ignore", **extra}


def test_every_part_passes_from_the_scratch_install(tmp_path):
    pytest.importorskip("transformers")  # the peers of the bench figures
    # The script's wiring, not inductor: torch.compile is a no-op here (TORCH_COMPILE_DISABLE),
    # so the compiled parts run their flags and rows without minutes of CPU code generation;
    # compiled steps are checked against eager in tests/e2e/test_compiling.py,
    # tests/e2e/test_train_options.py and tests/e2e/test_bench_smoke.py. The budget is sized for
    # a device call, raised here for 2 shared cores.
    env = _env(tmp_path, PY=sys.executable, MIM_CHECK_QUICK="1", MIM_CHECK_BUDGET="840",
               TORCH_COMPILE_DISABLE="1")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    out = tmp_path / "out"
    log = (out / "check.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    assert "[gpu-check] failed parts: 0" in proc.stdout
    # mim came from the scratch install, with its plugins mapped in
    assert f"mim from {tmp_path / 'site' / 'mim' / '__init__.py'}" in log
    assert "patch2d" in log and "mim (built-in)" in log
    # the second run resumed where the first stopped, and went on to its own end
    assert "resumed from" in log and "(step 4," in log
    steps = [json.loads(line)["step"] for line in (out / "metrics-eager.jsonl").open()]
    assert steps[-1] == 6, steps
    assert json.loads((out / "derived-eager.json").read_text())["precision"] in ("fp32", "bf16")
    assert (out / "picture.png").stat().st_size > 0
    # the compiled demo ran, and figures 1-2 came back with our compiled steps in them
    assert "== compile-blocks: exit 0" in log
    assert "== fp16: exit 0" in log
    assert "deepspeed-fp16: not run in the quick check" in log  # CUDA only
    feed = json.loads((out / "bench-feed.json").read_text())["rows"]  # figure 11 (CPU: 1 row)
    assert [row["figure"][:26] for row in feed] == ["11. cores per accelerator:"]
    # the fp16 demo ran under the dynamic loss scale, and said so in its metrics
    assert "== fp16: exit 0" in log
    fp16 = [json.loads(line) for line in (out / "metrics-fp16.jsonl").open()]
    assert fp16[-1]["step"] == 2 and fp16[-1]["overflow_steps"] >= 0, fp16
    assert fp16[-1]["loss_scale"] > 0 and all(r["loss"] is None or r["loss"] > 0 for r in fp16)
    rows = json.loads((out / "bench-image.json").read_text())["rows"]
    figures = [row["figure"] for row in rows]
    assert any("train.compile=blocks vs HF ViTMAE" in f for f in figures), figures
    assert any("train.compile=model vs HF ViTMAE" in f for f in figures), figures
    # no CUDA here: figure 6 is left out, and says so by an empty row list
    assert json.loads((out / "bench-gpu.json").read_text())["rows"] == []


def test_an_interpreter_without_the_configuration_packages_stops_with_the_remedy(tmp_path):
    python = tmp_path / "bare-python"  # no site-packages: no hydra, as on the CUDA image
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    python.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=_env(tmp_path, PY=str(python)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 99, proc.stdout + proc.stderr
    assert "lacks hydra-core and omegaconf" in proc.stdout
    assert "bash bench/gpu_check.sh --prepare" in proc.stdout
    assert not (tmp_path / "site").exists()  # nothing was installed
