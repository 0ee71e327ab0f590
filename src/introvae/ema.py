"""An exponential moving average (EMA) of the generator's weights, for sampling (``--ema``).

After every applied training step: theta_ema <- decay * theta_ema + (1 - decay) * theta. BatchNorm
running statistics are copied, not averaged. The average changes nothing in training; it usually
gives smoother samples than the last weights. It lives in the checkpoint, and ``load_model`` (sample,
evaluate, export) uses it when a run has one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(decoder: nn.Module) -> nn.Module:
    """A frozen copy of the generator to average into."""
    ema = copy.deepcopy(decoder).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, decoder: nn.Module, decay: float, weight: torch.Tensor | None = None) -> None:
    """One EMA step, on the device and without a host sync. ``weight`` (a 0/1 tensor) 0 leaves the
    average as it is: the step was skipped by the divergence guard."""
    params = list(ema.parameters())
    live = [p.detach() for p in decoder.parameters()]
    if weight is None:
        torch._foreach_lerp_(params, live, 1.0 - decay)
    else:
        w = (weight * (1.0 - decay)).to(params[0].device, params[0].dtype).reshape(())
        torch._foreach_lerp_(params, live, [w] * len(params))
    for b, v in zip(ema.buffers(), decoder.buffers()):
        b.copy_(torch.where(weight > 0, v, b) if weight is not None and b.is_floating_point() else v)
