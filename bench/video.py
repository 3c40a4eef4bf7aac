"""Figure 3: the video pretraining step against ``VideoMAEForPreTraining``.

VideoMAE ViT-B (``videomae_vit_base_patch16_16x224``): 16 frames at 224 px, 2x16x16 cubes
(L = 8 x 14 x 14 = 1568), tube masking 0.9 (152 visible tokens), decoder 4 x 384, norm-pix.
Both models get the same loader-made tube masks. On a CPU a step is heavy, so the batch is
small (2) and the rounds few (3 unless ``--rounds`` says otherwise); both are printed with the
row.
"""
from __future__ import annotations

import torch

from bench import steps
from bench.harness import Row, Settings, round_robin, seconds
from mim.models.factory import model_config
from mim.masking import TubeMask

MASK_RATIO = 0.9


def config(quick: bool):
    cfg = model_config("videomae_vit_base_patch16_16x224")
    if quick:
        cfg = model_config("videomae_vit_base_patch16_16x224", embed_dim=64, depth=2,
                           num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                           decoder_num_heads=2)
        return cfg, 4, 64, 1
    return cfg, 16, 224, 2


def run(settings: Settings, compile: tuple[str, ...] = ()) -> list[Row]:
    """``compile``: train.compile modes (blocks, model) to time our step in as well."""
    cfg, frames, size, batch = config(settings.quick)
    device = settings.device
    x = torch.randn(batch, 3, frames, size, size, device=device)
    grid = (frames // cfg.tubelet_size, size // cfg.patch_size, size // cfg.patch_size)
    generator = torch.Generator().manual_seed(0)
    policy = TubeMask(MASK_RATIO)
    masks = [torch.stack([policy(grid, generator) for _ in range(batch)]) for _ in range(3)]
    cases = {}
    for precision in settings.precisions:
        cases[f"ours {precision}"] = steps.ours(cfg, x, masks, precision).run
        cases[f"peer {precision}"] = steps.peer_video(cfg, x, masks[0].to(device), precision).run
        for mode in compile:
            cases[steps.ours_case(precision, mode)] = steps.ours(cfg, x, masks, precision,
                                                                 mode).run
    capped = not (settings.quick or settings.rounds_asked or device.type == "cuda")
    rounds = min(settings.rounds, 3) if capped else settings.rounds
    t = round_robin(cases, settings, rounds)
    visible = grid[0] * grid[1] * grid[2] - policy.num_masked(grid)
    label = (f"ViT-B {frames}x{size}, tubelet {cfg.tubelet_size}, tube {MASK_RATIO} "
             f"({visible} visible of {grid[0] * grid[1] * grid[2]}), batch {batch}, "
             f"{rounds} rounds, {device.type}")
    rows = []
    for precision, goal in (("fp32", 1.1), ("bf16", 1.3), ("fp16", None)):
        if precision not in settings.precisions:
            continue
        peer = f"peer {precision}"
        for mode in ("none", *compile):
            ours, what = steps.ours_case(precision, mode), steps.ours_label(mode)
            rows.append(Row(f"3. video step {precision}: {what} vs HF VideoMAE ({label})",
                            t.ratio(peer, ours), f"peer {seconds(t.median(peer))} / {ours} "
                            f"{seconds(t.median(ours))}", goal))
    return rows
