"""An exponential moving average (EMA) of the generator's weights, for sampling (``--ema``).

After every applied training step: theta_ema <- decay * theta_ema + (1 - decay) * theta, for the weights and
for the BatchNorm running statistics alike, so that the averaged weights are normalised by statistics of the
same stretch of training (copying the live statistics instead scored FID 255 against 166 with statistics
re-estimated for the average, on one epoch of Fashion-MNIST: docs/defaults-fashion-mnist.md). The average
changes nothing in training; over long runs it usually gives smoother samples than the last weights. It
remembers about 1 / (1 - decay) steps, and a young run has fewer: :func:`ema_decay` shortens the memory to the
steps there are, so that the average is never mostly the initial weights. It lives in the checkpoint, and
``load_model`` (sample, evaluate, export) uses it when a run has one.
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


def ema_decay(decay: float, step: int) -> float:
    """The decay of the average's update after ``step`` training steps: ``decay``, at most (1 + step) / (10 + step).

    With a constant decay the average starts from the initial, random generator, and still gives it
    ``decay ** step`` of its weight: 2 % after 3,750 steps at 0.999, 14 % after 2,000. The bound (the warm-up of
    TensorFlow's ExponentialMovingAverage with ``num_updates``) averages over roughly the last tenth of a young run;
    it reaches 0.999 at step 8,990, after which the two averages differ by 0.999 ** (steps since) of their
    difference then (6e-5 of it at step 18,750).
    """
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, decoder: nn.Module, decay: float, weight: torch.Tensor | None = None) -> None:
    """One EMA step, on the device and without a host sync. ``weight`` (a 0/1 tensor) 0 leaves the
    average as it is: the step was skipped by the divergence guard."""
    pairs = [(a, v.detach()) for a, v in zip(ema.parameters(), decoder.parameters())]
    pairs += [(b, v) for b, v in zip(ema.buffers(), decoder.buffers()) if b.is_floating_point()]
    averaged, live = [a for a, _ in pairs], [v for _, v in pairs]
    if weight is None:
        torch._foreach_lerp_(averaged, live, 1.0 - decay)
    else:
        w = (weight * (1.0 - decay)).to(averaged[0].device, averaged[0].dtype).reshape(())
        torch._foreach_lerp_(averaged, live, [w] * len(averaged))
    for b, v in zip(ema.buffers(), decoder.buffers()):
        if not b.is_floating_point():  # BatchNorm's step counters
            b.copy_(v)
