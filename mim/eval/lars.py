"""LARS: SGD with momentum and a layer-wise trust ratio (You, Gitman and Ginsburg 2017).

For a weight w with gradient g (weight decay folded in, g + wd w), the update direction is
g scaled by eta ||w|| / ||g||, so every layer moves by a similar fraction of its norm whatever
its gradient scale; that is what lets linear probing run at a huge batch (MAE Table 10: batch
16384, base lr 0.1, no weight decay). Biases and normalisation parameters (tensors with one
axis) are neither decayed nor scaled, as is common practice (and as MAE's probe does).
Ours, not ``timm.optim.Lars``: timm's ratio is eta ||w|| / (||g|| + wd ||w|| + eps), it adapts
1-D parameters too and only adapts at all with weight decay (or ``always_adapt``): other numbers.
"""
from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        if lr <= 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError("LARS: need lr > 0, weight_decay >= 0, 0 <= momentum < 1, "
                             "trust_coefficient > 0")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim > 1:  # weights: decay, then the trust ratio
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
