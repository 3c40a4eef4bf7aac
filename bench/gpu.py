"""Figure 6 (CUDA only): MFU and images/s of MAE ViT-L/16 bf16 pretraining.

MAE ViT-L/16 at 224 px, mask 0.75, decoder 8 x 512, norm-pix, bf16 autocast, the full step
(forward + backward + fused AdamW + schedule), eager and with ``train.compile``; the peer
``ViTMAEForPreTraining`` at the same sizes for a ratio. MFU = FLOPs of the step (counted by
``torch.utils.flop_counter``: matrix products and attention, forward and backward) / the
step's median time / the GPU's dense bf16 peak from its data sheet; the same over the practical
peak of an 8192^3 bf16 matrix product timed in the same round robin is printed too.
"""
from __future__ import annotations

import argparse

import torch

from bench import steps
from bench.harness import Row, Settings, matmul_case, round_robin, seconds
from bench.image import masks
from mim.models import model_config

# dense bf16 tensor-core peaks from the vendors' data sheets, FLOP/s
DATASHEET_BF16 = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12,
                  "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def datasheet_peak(name: str) -> float | None:
    for key in sorted(DATASHEET_BF16, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return DATASHEET_BF16[key]
    return None


def run(settings: Settings, args: argparse.Namespace | None = None) -> list[Row]:
    if settings.device.type != "cuda":
        return []
    return measure(settings, torch.cuda.get_device_name(settings.device))


def measure(settings: Settings, name: str) -> list[Row]:
    device = settings.device
    batch = 16 if settings.quick else 256
    cfg = model_config("mae_vit_large_patch16")
    if settings.quick:
        cfg = model_config("mae_vit_large_patch16", depth=2)
    x = torch.randn(batch, 3, 224, 224, device=device)
    ms = masks((14, 14), batch)
    eager = steps.ours(cfg, x, ms, "bf16")
    peer = steps.peer_image(cfg, x, 0.75, "bf16")
    flops = {"ours": steps.image_flops(eager), "peer": steps.image_flops(peer)}
    flops["ours compiled"] = flops["ours"]
    cases = {"ours": eager.run, "ours compiled": steps.ours(cfg, x, ms, "bf16", True).run,
             "peer": peer.run}
    cases["matmul"], matmul_flops = matmul_case(torch.bfloat16, device, 8192, 10)
    settings = Settings(warmup=3, rounds=max(settings.rounds, 10), quick=settings.quick,
                        device=device)  # warm-up 3: compilation and autotuning
    t = round_robin(cases, settings)
    sheet = datasheet_peak(name)
    measured = matmul_flops / t.median("matmul")
    label = f"ViT-L/16 224px, mask 0.75, bf16, batch {batch}, {name}"
    rows = []
    for case in ("ours", "ours compiled", "peer"):
        step = t.median(case)
        achieved = flops[case] / step
        what = f"{flops[case] / 1e12:.1f} TFLOP in {seconds(step)} = {achieved / 1e12:.0f} TFLOP/s"
        if sheet:
            rows.append(Row(f"6. MFU, {case} ({label}) / data-sheet bf16 peak", achieved / sheet,
                            f"{what}; peak {sheet / 1e12:.0f} TFLOP/s",
                            0.5 if case != "peer" else None))
        rows.append(Row(f"6. {case} FLOP/s / 8192^3 bf16 matmul FLOP/s",
                        flops[case] / matmul_flops * t.ratio("matmul", case),
                        f"matmul {measured / 1e12:.0f} TFLOP/s"))
        rows.append(Row(f"6. images/s, {case}", batch / step, f"{batch} images in {seconds(step)}"))
    for case in ("ours", "ours compiled"):
        rows.append(Row(f"6. step: {case} vs HF ViTMAE ({label})", t.ratio("peer", case),
                        f"peer {seconds(t.median('peer'))} / {case} {seconds(t.median(case))}"))
    return rows
