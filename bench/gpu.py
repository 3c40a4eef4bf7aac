"""Figure 6 (CUDA only): MFU and images/s of MAE ViT-L/16 bf16 pretraining.

MAE ViT-L/16 at 224 px, mask 0.75, decoder 8 x 512, norm-pix, bf16 autocast, the full step
(forward + backward + fused AdamW + schedule), eager and with ``train.compile=blocks`` and
``=model``; the peer ``ViTMAEForPreTraining`` at the same sizes for a ratio. MFU = FLOPs of
the step (counted by ``torch.utils.flop_counter``: matrix products and attention, forward and
backward) / the step's median time / the GPU's dense bf16 peak from its data sheet; the same
over the practical peak of an 8192^3 bf16 matrix product timed in the same round robin is
printed too.
"""
from __future__ import annotations

import argparse

import torch

from bench import steps
from bench.harness import Row, Settings, matmul_case, round_robin, seconds
from bench.image import masks
from mim.models.factory import model_config

COMPILE_MODES = ("blocks", "model")

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
    """The rows of figure 6 on ``settings.device`` named ``name``. ``quick`` shrinks the model,
    batch and matrix product so that the figure's code runs in seconds, on a CPU too (the smoke
    test, with emulated bf16); the compiled case is timed on CUDA only (inductor's CPU compile
    takes minutes)."""
    device, quick = settings.device, settings.quick
    cfg = model_config("mae_vit_large_patch16")
    batch, size, repeats = 256, 8192, 10
    if quick:
        cfg = model_config("mae_vit_large_patch16", embed_dim=64, depth=1, num_heads=2,
                           decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
        batch, size, repeats = 4, 256, 2
    x = torch.randn(batch, 3, 224, 224, device=device)
    ms = masks((14, 14), batch)
    eager = steps.ours(cfg, x, ms, "bf16")
    peer = steps.peer_image(cfg, x, 0.75, "bf16")
    flops = {"ours": steps.image_flops(eager), "peer": steps.image_flops(peer)}
    cases = {"ours": eager.run, "peer": peer.run}
    if device.type == "cuda":
        for mode in COMPILE_MODES:
            flops[f"ours compile={mode}"] = flops["ours"]
            cases[f"ours compile={mode}"] = steps.ours(cfg, x, ms, "bf16", mode).run
    cases["matmul"], matmul_flops = matmul_case(torch.bfloat16, device, size, repeats)
    if not quick:  # warm-up 3: compilation and autotuning
        settings = Settings(warmup=3, rounds=max(settings.rounds, 10), device=device)
    t = round_robin(cases, settings)
    sheet = datasheet_peak(name)
    measured = matmul_flops / t.median("matmul")
    label = (f"ViT-L/16 224px, mask 0.75, bf16, batch {batch}, {name}" if not quick
             else f"tiny ViT, bf16, batch {batch}, {name}")
    rows = []
    ours = ["ours", *(f"ours compile={mode}" for mode in COMPILE_MODES)]
    for case in [c for c in (*ours, "peer") if c in cases]:
        step = t.median(case)
        achieved = flops[case] / step
        what = f"{flops[case] / 1e12:.1f} TFLOP in {seconds(step)} = {achieved / 1e12:.0f} TFLOP/s"
        if sheet:
            rows.append(Row(f"6. MFU, {case} ({label}) / data-sheet bf16 peak", achieved / sheet,
                            f"{what}; peak {sheet / 1e12:.0f} TFLOP/s",
                            0.5 if case != "peer" else None))
        rows.append(Row(f"6. {case} FLOP/s / {size}^3 bf16 matmul FLOP/s",
                        flops[case] / matmul_flops * t.ratio("matmul", case),
                        f"matmul {measured / 1e12:.0f} TFLOP/s"))
        rows.append(Row(f"6. images/s, {case}", batch / step, f"{batch} images in {seconds(step)}"))
    for case in [c for c in ours if c in cases]:
        rows.append(Row(f"6. step: {case} vs HF ViTMAE ({label})", t.ratio("peer", case),
                        f"peer {seconds(t.median('peer'))} / {case} {seconds(t.median(case))}"))
    return rows
