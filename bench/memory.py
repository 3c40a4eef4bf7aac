"""Figure 7: activation checkpointing (``model.activation_checkpointing=all``) against none.

MAE ViT-B/16 at 224 px, mask 0.75, decoder 8 x 512, the training loop's step (``steps.ours``) in
the device's default precision (``train.precision=auto``). What it saves: the bytes autograd keeps
for backward (counted with ``saved_tensors_hooks``; recomputed blocks keep only their input) and,
on a GPU, the peak allocated memory of a step. What it costs: step time, A B A B.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from bench import image, steps
from bench.harness import Row, Settings, round_robin, seconds
from mim.config.schema import TrainConfig
from mim.engine import precision as precisions


def kept_for_backward(step: steps.Step) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one forward."""
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step.forward()
    del loss
    return total[0]


def peak_memory(step: steps.Step, device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step.run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def run(settings: Settings) -> list[Row]:
    cfg, size, batch = image.config(settings.quick)
    device = settings.device
    batch = image.batch_for(device, settings.quick) or batch
    precision, _ = precisions.resolve(TrainConfig().precision, precisions.native_bf16(device))
    x = torch.randn(batch, 3, size, size, device=device)
    ms = image.masks((size // cfg.patch_size,) * 2, batch)
    made = {which: steps.ours(replace(cfg, activation_checkpointing=which), x, ms, precision)
            for which in ("none", "all")}
    kept = {which: kept_for_backward(step) for which, step in made.items()}
    t = round_robin({which: step.run for which, step in made.items()}, settings)
    label = f"ViT-B/16 {size}px, batch {batch}, {precision}, {device.type}"
    rows = [Row(f"7. activation checkpointing: activations kept for backward, none / all "
                f"({label})", kept["none"] / kept["all"],
                f"{kept['none'] / 2 ** 20:.0f} MiB / {kept['all'] / 2 ** 20:.0f} MiB"),
            Row(f"7. activation checkpointing: step time, all / none ({label})",
                t.ratio("all", "none"),
                f"all {seconds(t.median('all'))} / none {seconds(t.median('none'))}; "
                "about one more forward pass")]
    if device.type == "cuda":
        peaks = {which: peak_memory(step, device) for which, step in made.items()}
        rows.append(Row(f"7. activation checkpointing: peak memory of a step, none / all "
                        f"({label})", peaks["none"] / peaks["all"],
                        f"{peaks['none'] / 2 ** 30:.1f} GiB / {peaks['all'] / 2 ** 30:.1f} GiB"))
    return rows
