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
def update_ema(ema: nn.Module, decoder: nn.Module, decay: float) -> None:
    """One EMA step, on the device and without a host sync."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in decoder.parameters()], 1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(decoder.buffers()))
