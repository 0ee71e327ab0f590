"""``--margin auto``: a margin m set from the encoder's own KL of real images, and kept above it.

The paper's rule for stable training (Sec. 4.3 and Fig. 5; Appendix D) is that the KL of real images stays
below m while those of reconstructions and samples hover around it, and it advises m "a little larger than the
training KL of a VAE". :class:`AutoMargin` does what that advice asks, during the run: it keeps a moving average
(about ``1 / (1 - decay)`` steps) of the batch-mean KL of real images. During the VAE warm-up that average is the
VAE's KL (what ``introvae calibrate`` measures by hand), and at the first introspective step m is set to
``ratio`` times it (1.5x, the calibration advice this package has given since 0.1: 1.1x left every KL above m).
From then on m stays there, unless kl_real climbs to within ``guard`` of it: then m rises to ``guard`` x the
average, so that kl_real stays below m. A first design that kept m at 1.5x the moving kl_real all along let m
climb with kl_real (35.7 to 53.4 on the faces) and scored a worse FID than the fixed calibrated margin
(README), so m now follows kl_real only to keep the rule.

Everything happens on the device (no host synchronisation); several processes average kl_real first, so they
agree on m. The state is part of the checkpoint: a resumed run continues with the same margin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import distributed as dist_

RATIO = 1.5  # m at the start of the game, times the VAE's KL of real images
GUARD = 1.1  # m is kept at least this many times the moving kl_real
DECAY = 0.98  # about 50 steps of memory: longer than the batch noise, short enough to forget the warm-up's first steps


class AutoMargin:
    """Callable: ``margin(kl_real)`` -> the margin in force (0-d fp32 tensor on the device of ``kl_real``).
    ``observe(kl_real_mean, ok)`` after every training step (warm-up included) feeds the average."""

    def __init__(self, device: torch.device, *, world: dist_.World = dist_.SINGLE, ratio: float = RATIO,
                 guard: float = GUARD, decay: float = DECAY):
        self.ratio, self.guard, self.decay, self.world = ratio, guard, decay, world
        self.average = torch.zeros((), device=device)  # sum of decay-weighted kl_real
        self.weight = torch.zeros((), device=device)  # sum of the weights (bias correction of the average)
        self.start = torch.full((), float("nan"), device=device)  # m at the first introspective step

    def _mean(self, x: Tensor) -> Tensor:
        """The mean of this process's values, over every process."""
        k = x.detach().float().mean()
        if self.world.enabled:
            k = k.clone()
            torch.distributed.all_reduce(k)  # the mean over processes: every process gets the same margin
            k = k / self.world.size
        return k

    def __call__(self, kl_real: Tensor) -> Tensor:
        """The margin in force: ``ratio`` x the average at the first call (x this batch's mean KL when nothing was
        observed yet, i.e. without a warm-up), then kept, and raised to ``guard`` x the average if that is more."""
        known = self.weight > 0
        average = torch.where(known, self.average / self.weight.clamp(min=1e-12), self._mean(kl_real))
        self.start = torch.where(torch.isnan(self.start), self.ratio * average, self.start)
        return torch.maximum(self.start, self.guard * average)

    @property
    def value(self) -> Tensor:
        """Where the margin stands for the next step (NaN before any step was observed): ratio x the average before
        the game has started, else the margin in force."""
        average = self.average / self.weight
        return torch.where(torch.isnan(self.start), self.ratio * average, torch.maximum(self.start, self.guard * average))

    def observe(self, kl_real_mean: Tensor, ok: Tensor | None = None) -> None:
        """Fold one step's batch-mean kl_real (this process's) into the average, unless the step was skipped
        (``ok`` false) or the value is not finite."""
        k = self._mean(kl_real_mean)
        keep = torch.isfinite(k) if ok is None else torch.isfinite(k) & ok.bool().reshape(())
        self.average = torch.where(keep, self.decay * self.average + (1 - self.decay) * k, self.average)
        self.weight = torch.where(keep, self.decay * self.weight + (1 - self.decay), self.weight)

    def state_dict(self) -> dict[str, Tensor]:
        return {"average": self.average.cpu(), "weight": self.weight.cpu(), "start": self.start.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.average.device
        self.average, self.weight = state["average"].to(device), state["weight"].to(device)
        self.start = state.get("start", torch.tensor(float("nan"))).to(device)


def make_margin(margin: float | str, device: torch.device, *, world: dist_.World = dist_.SINGLE):
    """The margin a run trains with: the number given, or an :class:`AutoMargin` for ``"auto"``."""
    return AutoMargin(device, world=world) if margin == "auto" else float(margin)
