"""The benchmark suite runs and prints its table (``python -m bench --quick``: tiny models).

Only that it runs: no timing is asserted anywhere in the tests (bench/RESULTS.md holds the
measured figures).
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


def test_bench_quick_prints_the_table(tmp_path):
    pytest.importorskip("transformers")  # the peers (the `test` and `bench` extras have it)
    out = tmp_path / "rows.json"
    env = {**os.environ, "MIM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| figure | value | goal | met | measured |" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    figures = {row["figure"].split(".")[0] for row in rows}
    assert {"1", "2", "3", "4", "5", "7", "8", "9", "10a", "10b", "11"} <= figures, figures
    assert all(row["value"] == row["value"] for row in rows)  # no NaN
    assert json.loads(out.read_text())["machine"]["torch"]


def test_bench_rejects_an_unknown_figure():
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "imagez"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert ("unknown figure 'imagez'; valid: image, video, paper, data, pipeline, shards, memory, "
            "resolution, feed, gpu") in proc.stderr


@pytest.mark.parametrize("native", ["0", "1"])
def test_bench_times_only_the_precisions_asked(tmp_path, native):
    """On a CPU without native bf16 the suite runs like this (``bench.harness.precisions``);
    ``--compile`` adds our step with its blocks compiled. Where bf16 is native, `mim train`'s
    default step is bf16: it is timed for the defaults row alone, and no bf16 figure is made."""
    pytest.importorskip("transformers")
    out = tmp_path / "rows.json"
    env = {**os.environ, "MIM_NATIVE_BF16": native}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "image",
                           "--precisions", "fp32", "--compile", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = [row["figure"] for row in json.loads(out.read_text())["rows"]]
    assert any(f.startswith("1. image step fp32") for f in figures), figures
    assert any(f.startswith("2. utilisation fp32") for f in figures), figures
    assert any(f.startswith("1. image step fp32: ours + train.compile=blocks vs") for f in figures)
    assert any(f.startswith("2. utilisation fp32: ours fp32 compile=blocks") for f in figures)
    assert not any("bf16" in f.split("(")[0] for f in figures), figures
    default = next(f for f in figures if f.startswith("1. image step, defaults"))
    assert f"-> {'bf16' if native == '1' else 'fp32'}, train.compile=" in default, default


def test_bench_rejects_an_unknown_compile_mode():
    proc = subprocess.run([sys.executable, "-m", "bench", "--compile", "blocks,fast"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--compile: 'fast' is not one of: blocks, model" in proc.stderr


def test_bench_rejects_an_unknown_precision():
    proc = subprocess.run([sys.executable, "-m", "bench", "--precisions", "fp8"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "--precisions: 'fp8' is not one of: fp32, bf16, fp16" in proc.stderr


def test_gpu_figure_code_runs_at_tiny_size_on_the_cpu():
    """Figure 6 is timed on CUDA only, and no GPU has been lent to this project's machines so
    far: its code runs here at tiny size (bf16 emulated), named as an H200 so that the MFU rows
    against the data sheet are made too."""
    pytest.importorskip("transformers")
    import torch

    from bench import gpu
    from bench.harness import Settings

    assert gpu.datasheet_peak("NVIDIA H100 PCIe") == 756e12  # the longest name wins
    assert gpu.datasheet_peak("NVIDIA H200") == gpu.datasheet_peak("NVIDIA H100 80GB HBM3")
    rows = gpu.measure(Settings(warmup=1, rounds=1, quick=True, device=torch.device("cpu")),
                       "NVIDIA H200")
    by_name = {row.figure.split(" (")[0]: row for row in rows}
    mfu = by_name["6. MFU, ours"]
    assert 0 < mfu.value < 1 and mfu.goal == 0.5 and "peak 989 TFLOP/s" in mfu.detail
    assert by_name["6. images/s, ours"].value > 0 and by_name["6. images/s, peer"].value > 0
    assert by_name["6. step: ours vs HF ViTMAE"].value > 0
    assert all(row.value == row.value for row in rows)  # no NaN
