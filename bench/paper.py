"""Figure 4: the papers' compute claims, measured on our implementation.

- MAE Table 1c: an encoder that also takes the mask tokens ("w/ [M]", as BEiT / SimMIM do) costs
  3.3x the FLOPs of MAE's encoder on visible tokens only (ViT-L, decoder 8 x 512, mask 0.75).
  Counted here for the whole model (encoder + decoder, forward + backward).
- MAE Table 2 turns that into wall-clock (2.8x on 128 TPU-v3 cores); here: forward + backward of
  the same pair, against the FLOPs ratio.
- Long-sequence MAE (Hu et al. 2022, Sec. 3): 448 px with patch 16 (L = 784) costs ~4x the
  compute of 224 px (L = 196). Here: ViT-B with the long-sequence recipe (decoder half the
  encoder's width, 2x2 mask unit at 0.75), forward + backward at each length.

The AdamW step is left out of these timings: it costs the same on both sides of each pair (it
depends on the parameters, not on the tokens), and at a CPU batch of 1-2 it would drown the
difference the papers talk about (at their batch of 4096 it is negligible).
"""
from __future__ import annotations

import torch
from torch import nn

from bench.harness import Row, Settings, count_flops, round_robin, seconds
from mim.models.factory import build_model, model_config
from mim.masking import BlockMask, RandomMask
from mim.models.model import Encoded, MaskedAutoencoder


class EncoderWithMaskTokens(nn.Module):
    """MAE Table 1c's "encoder w/ [M]": every position enters the encoder, masked ones as a
    learned mask token; the decoder then gets all L encoded tokens (no second mask token)."""

    def __init__(self, mae: MaskedAutoencoder):
        super().__init__()
        self.mae = mae
        self.mask_token = nn.Parameter(torch.zeros(1, 1, mae.tokenizer.embed_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mae = self.mae
        grid = mae.tokenizer.grid(x.shape[1:])
        tokens = mae.tokenizer(x, None)  # [B, L, D]: all positions
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + mae.pos_embed(grid, tokens.shape[-1], tokens)
        if mae.cls_token is not None:
            tokens = torch.cat([mae.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in mae.blocks:
            tokens = block(tokens)
        encoded = Encoded(mae.norm(tokens), None, grid, mae.num_prefix)
        return mae.loss(x, mae.decode(encoded), mask)  # [B, 1 + L, D] -> loss on masked


def _train_pass(model: nn.Module, x: torch.Tensor, mask: torch.Tensor):
    def run() -> None:
        out = model(x, mask)
        loss = out if isinstance(out, torch.Tensor) else out.loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def _mask(policy, grid: tuple[int, ...], batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.stack([policy(grid, generator) for _ in range(batch)])


def mask_tokens(settings: Settings) -> list[Row]:
    if settings.quick:
        cfg = model_config("mae_vit_large_patch16", embed_dim=64, depth=2, num_heads=2,
                           decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
        size, batch, rounds = 32, 2, settings.rounds
    else:  # batch 4: at batch 1 the 50-row matrix products of "w/o [M]" wait on weight traffic
        cfg, size, batch, rounds = model_config("mae_vit_large_patch16"), 224, 4, 2
    device = settings.device
    torch.manual_seed(0)
    mae = build_model(cfg, in_chans=3).to(device)
    with_m = EncoderWithMaskTokens(build_model(cfg, in_chans=3)).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    grid = mae.tokenizer.grid(x.shape[1:])
    mask = _mask(RandomMask(0.75), grid, batch).to(device)
    cases = {"w/o [M]": _train_pass(mae, x, mask), "w/ [M]": _train_pass(with_m, x, mask)}
    # FLOPs are linear in the batch: counted on one image
    flops = {name: count_flops(_train_pass(model, x[:1], mask[:1]))
             for name, model in (("w/o [M]", mae), ("w/ [M]", with_m))}
    t = round_robin(cases, settings, rounds)
    flop_ratio = flops["w/ [M]"] / flops["w/o [M]"]
    time_ratio = t.ratio("w/ [M]", "w/o [M]")
    label = f"ViT-L/16 {size}px, decoder 8x512, mask 0.75, fwd+bwd"
    return [
        Row(f"4. MAE Table 1c: FLOPs encoder w/ [M] / w/o [M] ({label})", flop_ratio,
            f"{flops['w/ [M]'] / 1e9:.0f} / {flops['w/o [M]'] / 1e9:.0f} GFLOP per image; "
            "paper 3.3x", None, "paper 3.3"),
        Row(f"4. MAE Table 2: wall-clock w/ [M] / w/o [M] (batch {batch}, {rounds} rounds, "
            f"{device.type})", time_ratio,
            f"{seconds(t.median('w/ [M]'))} / {seconds(t.median('w/o [M]'))}; time ratio / "
            f"FLOPs ratio {time_ratio / flop_ratio:.2f}; paper 2.8x on 128 TPU-v3", None,
            f"FLOPs {flop_ratio:.2f}"),
    ]


def long_sequence(settings: Settings) -> list[Row]:
    if settings.quick:
        cfg = model_config("lsmae_vit_base_patch16", embed_dim=64, depth=2, num_heads=2,
                           decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
        sizes, batch, rounds = (64, 128), 2, settings.rounds
    else:
        cfg, sizes, batch, rounds = model_config("lsmae_vit_base_patch16"), (224, 448), 4, 3
    device = settings.device
    torch.manual_seed(0)
    model = build_model(cfg, in_chans=3).to(device)
    cases, flops, lengths = {}, {}, {}
    for size in sizes:
        x = torch.randn(batch, 3, size, size, device=device)
        grid = model.tokenizer.grid(x.shape[1:])
        mask = _mask(BlockMask(0.75, [2, 2]), grid, batch).to(device)
        name = f"L={grid[0] * grid[1]}"
        lengths[size] = name
        cases[name] = _train_pass(model, x, mask)
        flops[name] = count_flops(cases[name])
    t = round_robin(cases, settings, rounds)
    short, long = lengths[sizes[0]], lengths[sizes[1]]
    flop_ratio = flops[long] / flops[short]
    return [Row(f"4. long-seq MAE: step time {long} / {short} (ViT-B, decoder 384, 2x2 unit, "
                f"batch {batch}, fwd+bwd, {rounds} rounds, {device.type})",
                t.ratio(long, short), f"{seconds(t.median(long))} / "
                f"{seconds(t.median(short))}; FLOPs ratio {flop_ratio:.2f}; paper ~4x", None,
                "paper ~4")]


def run(settings: Settings) -> list[Row]:
    return mask_tokens(settings) + long_sequence(settings)
