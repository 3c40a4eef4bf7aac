"""Figure 10: progressive resolution (``data.resolution_schedule``), what it buys and what it costs.

a. Speed: our step (``Trainer.train_step``) at each size of a schedule against the fixed full
   size, in one round robin: images/s at that size over images/s at the full size, and the
   whole schedule's (equal stages) over the fixed size's. MAE ViT-B/16, mask 0.75, batch 8,
   160 -> 192 -> 224 px (``--quick``: a tiny model, 32 -> 48 -> 64 px).
b. Quality: two ``mim train`` runs of the LFW demo (``experiment=demo data.demo=lfw``), one at
   the fixed 112 px and one with the schedule 64 -> 80 -> 96 -> 112, the same steps and batch
   (equal samples), one core each, then ``mim eval knn`` of both. Reported: the mean loss of
   the last stage's steps (both at 112 px there), k-NN top-1 on the held-out LFW items, and the
   wall-clock of each run (data loading included).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import steps
from bench.harness import Row, Settings, round_robin, seconds
from bench.image import MASK_RATIO, config, masks


def speed(settings: Settings) -> list[Row]:
    cfg, _, batch = config(settings.quick)
    patch = cfg.patch_size  # quick: 16 px patches as well, so the sizes go up to 64
    schedule = [32, 48, 64] if settings.quick else [160, 192, 224]
    full = schedule[-1]
    model = "tiny" if settings.quick else "ViT-B/16"
    precision = settings.precisions[0]
    cases = {}
    for size in dict.fromkeys(schedule):
        x = torch.randn(batch, 3, size, size, device=settings.device)
        cases[f"{size}px"] = steps.ours(cfg, x, masks((size // patch,) * 2, batch),
                                        precision).run
    t = round_robin(cases, settings)
    fixed = f"{full}px"
    rows = [Row(f"10a. progressive resolution: images/s at {name} over {fixed} ({model} MAE "
                f"step, mask {MASK_RATIO}, batch {batch}, {precision})", t.ratio(fixed, name),
                f"{fixed} {seconds(t.median(fixed))} / {name} {seconds(t.median(name))}")
            for name in cases if name != fixed]
    per_step = statistics.mean(t.median(f"{s}px") for s in schedule)  # equal stages
    rows.append(Row(f"10a. progressive resolution: images/s of the schedule "
                    f"{'->'.join(map(str, schedule))} over the fixed {fixed}",
                    t.median(fixed) / per_step,
                    f"fixed {seconds(t.median(fixed))} / schedule mean {seconds(per_step)}"))
    return rows


def _mim(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core: the machine is shared
    proc = subprocess.run([sys.executable, "-m", "mim", *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"mim {args[0]} failed: {proc.stderr[-2000:]}")


def _train_and_eval(directory: Path, overrides: list[str]) -> dict:
    start = time.perf_counter()
    _mim("train", "modality=image", "experiment=demo", "data.demo=lfw", "train.num_workers=0",
         "train.log_every=1", "train.vis_every=100000", "tracker=[]", *overrides,
         f"run.dir={directory}")
    wall = time.perf_counter() - start
    out = directory / "knn.json"
    _mim("eval", "knn", f"run.dir={directory}", f"eval.out={out}")
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "records": records, "top1": json.loads(out.read_text())["metrics"]["top1"]}


def quality(settings: Settings) -> list[Row]:
    if settings.quick:
        common = ["train.max_steps=6", "data.input_size=64", "model.depth=1",
                  "train.batch_size=8"]
        schedule = "[32,64]"
    else:
        common = ["train.max_steps=300"]  # the demo's own length, batch 16, 112 px
        schedule = "[64,80,96,112]"
    with tempfile.TemporaryDirectory() as tmp:
        fixed = _train_and_eval(Path(tmp) / "fixed", common)
        progressive = _train_and_eval(Path(tmp) / "progressive",
                                      [*common, f"data.resolution_schedule={schedule}"])
        stages = json.loads((Path(tmp) / "progressive" / "derived.json").read_text())[
            "resolution_schedule"]
    last = stages[-1]["from_step"]  # both runs train at the full size from here

    def tail(run: dict) -> float:
        return statistics.mean(r["loss"] for r in run["records"] if r["step"] > last)

    steps_run = len(fixed["records"])
    return [
        Row(f"10b. LFW demo, {steps_run} steps: last-stage loss, schedule {schedule} over fixed",
            tail(progressive) / tail(fixed),
            f"fixed {tail(fixed):.4f} / progressive {tail(progressive):.4f} (steps > {last})"),
        Row("10b. LFW demo: k-NN top-1, schedule minus fixed (points)",
            progressive["top1"] - fixed["top1"],
            f"fixed {fixed['top1']:.2f}% / progressive {progressive['top1']:.2f}%"),
        Row("10b. LFW demo: wall-clock of the run, fixed over schedule",
            fixed["wall"] / progressive["wall"],
            f"fixed {fixed['wall']:.0f} s / progressive {progressive['wall']:.0f} s"),
    ]


def run(settings: Settings) -> list[Row]:
    return speed(settings) + quality(settings)
