"""Figures 1 and 2: the image pretraining step against ``ViTMAEForPreTraining``, and utilisation.

MAE ViT-B/16 at 224 px, mask 0.75, norm-pix, decoder 8 x 512, batch 8. One round robin holds
ours and the peer in fp32 and in bf16 autocast, and a 2048 x 2048 matrix product in each
precision (the practical matmul peak of the moment), so every ratio below comes from the same
minutes of the same machine. Utilisation = FLOPs of our step (forward + backward, counted by
``torch.utils.flop_counter``) / our step's median time / the matmul peak.
"""
from __future__ import annotations

import torch

from bench import steps
from bench.harness import Row, Settings, matmul_case, round_robin, seconds
from mim.config.schema import TrainConfig
from mim.engine import precision as precisions
from mim.models.factory import model_config
from mim.masking import RandomMask

MASK_RATIO = 0.75


def config(quick: bool):
    if quick:  # seconds on a laptop: checks the plumbing, measures nothing
        return model_config("mae_vit_base_patch16", embed_dim=64, depth=2, num_heads=2,
                            decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2), 32, 2
    return model_config("mae_vit_base_patch16"), 224, 8  # the CPU setting


def batch_for(device: torch.device, quick: bool) -> int | None:
    """A GPU gets a batch that fills it (64); None keeps the CPU setting."""
    return 64 if device.type == "cuda" and not quick else None


def masks(grid: tuple[int, ...], batch: int, count: int = 4) -> list[torch.Tensor]:
    """Loader-made masks [B, L] (the collate function draws them in the workers)."""
    generator = torch.Generator().manual_seed(0)
    policy = RandomMask(MASK_RATIO)
    return [torch.stack([policy(grid, generator) for _ in range(batch)]) for _ in range(count)]


def run(settings: Settings, compile: tuple[str, ...] = ()) -> list[Row]:
    """``compile``: train.compile modes (blocks, model) to time our step in as well."""
    cfg, size, batch = config(settings.quick)
    device = settings.device
    batch = batch_for(device, settings.quick) or batch
    x = torch.randn(batch, 3, size, size, device=device)
    grid = (size // cfg.patch_size,) * 2
    ms = masks(grid, batch)
    default = TrainConfig()  # what `mim train` does unless told otherwise
    # train.precision=auto, resolved as the training loop does for this device
    precision_default, why = precisions.resolve(default.precision,
                                                precisions.native_bf16(device))
    ours_default = steps.ours_case(precision_default, default.compile)
    cases, flops = {}, {}
    for precision in settings.precisions:
        step = steps.ours(cfg, x, ms, precision)
        peer = steps.peer_image(cfg, x, MASK_RATIO, precision)
        if not flops:  # FLOPs do not depend on the precision: counted once
            flops["ours"], flops["peer"] = steps.image_flops(step), steps.image_flops(peer)
        cases[f"ours {precision}"], cases[f"peer {precision}"] = step.run, peer.run
        for mode in compile:
            cases[steps.ours_case(precision, mode)] = steps.ours(cfg, x, ms, precision,
                                                                 mode).run
        del step, peer
    if ours_default not in cases:  # the default precision was not asked: timed for its row only,
        ours_default = "ours default"  # under a name no per-precision figure looks for
        cases[ours_default] = steps.ours(cfg, x, ms, precision_default, default.compile).run
    peaks = {}
    for precision in settings.precisions:
        dtype = precisions.DTYPES.get(precision, torch.float32)
        cases[f"matmul {precision}"], peaks[precision] = matmul_case(
            dtype, device, 8192 if device.type == "cuda" else 2048)
    t = round_robin(cases, settings)
    med = lambda name: seconds(t.median(name))  # noqa: E731

    rows = []
    label = f"ViT-B/16 {size}px, mask {MASK_RATIO}, batch {batch}, {device.type}"
    for precision, goal in (("fp32", 1.1), ("bf16", 1.3), ("fp16", None)):
        for mode in ("none", *compile):
            name = steps.ours_case(precision, mode)
            if name in t:
                what = steps.ours_label(mode)
                rows.append(Row(f"1. image step {precision}: {what} vs HF ViTMAE ({label})",
                                t.ratio(f"peer {precision}", name),
                                f"peer {med(f'peer {precision}')} / {name} {med(name)}", goal))
    if "peer fp32" in t:
        rows.append(Row(f"1. image step, defaults: ours ({why} -> {precision_default}, "
                        f"train.compile={default.compile}) vs HF (fp32, SDPA, "
                        "fused AdamW)", t.ratio("peer fp32", ours_default),
                        f"peer {med('peer fp32')} / ours {med(ours_default)}", 2.0))
    if "peer fp32" in t and "ours bf16" in t:
        rows.append(Row("1. image step: ours bf16 vs HF default (fp32)",
                        t.ratio("peer fp32", "ours bf16"),
                        f"peer fp32 {med('peer fp32')} / ours bf16 {med('ours bf16')}"))
    for precision, goal in (("fp32", 0.9), ("bf16", 0.8), ("fp16", None)):
        if precision not in settings.precisions:
            continue
        matmul = f"matmul {precision}"
        peak = peaks[precision] / t.median(matmul)
        # compiling changes no FLOP: a compiled step counts as many as the eager one
        named = [("ours", f"ours {precision}"), ("peer", f"peer {precision}"),
                 *(("ours", steps.ours_case(precision, mode)) for mode in compile)]
        for who, name in named:
            # per round: (FLOPs / step time) / (matmul FLOPs / matmul time)
            util = flops[who] / peaks[precision] * t.ratio(matmul, name)
            rows.append(Row(f"2. utilisation {precision}: {name} FLOP/s / square matmul FLOP/s",
                            util, f"{flops[who] / 1e9:.0f} GFLOP in {med(name)} = "
                            f"{flops[who] / t.median(name) / 1e9:.0f} GFLOP/s; matmul "
                            f"{peak / 1e9:.0f} GFLOP/s", goal if who == "ours" else None))
    return rows
