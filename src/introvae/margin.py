"""``--margin auto``: a margin m that follows the encoder's own KL of real images.

The paper's rule for stable training (Sec. 4.3 and Fig. 5; Appendix D) is that the KL of real images stays
below m while those of reconstructions and samples hover around it, and it advises m "a little larger than the
training KL of a VAE". :class:`AutoMargin` turns that rule into a controller: m is ``ratio`` times a moving
average of the batch-mean KL of real images. During the VAE warm-up the average measures the VAE's KL (what
``introvae calibrate`` does by hand), so the introspective game starts at ``ratio`` x that KL; afterwards m
follows kl_real slowly (an average over about ``1 / (1 - decay)`` steps) as the game moves it, so kl_real keeps
its distance below m on any data, image size, latent size or beta. ``ratio`` 1.5 is the calibration advice
this package has given since 0.1 (a margin 1.1x the VAE's KL left every KL below it, and no game).

Everything happens on the device (no host synchronisation); several processes average kl_real first, so they
agree on m. The state is part of the checkpoint: a resumed run continues with the same margin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import distributed as dist_

RATIO = 1.5
DECAY = 0.98  # about 50 steps of memory: longer than the batch noise, short enough to forget the warm-up's first steps


class AutoMargin:
    """Callable: ``margin(kl_real)`` -> the margin in force (0-d fp32 tensor on the device of ``kl_real``).
    ``observe(kl_real_mean, ok)`` after every training step (warm-up included) feeds the average."""

    def __init__(self, device: torch.device, *, world: dist_.World = dist_.SINGLE, ratio: float = RATIO,
                 decay: float = DECAY):
        self.ratio, self.decay, self.world = ratio, decay, world
        self.average = torch.zeros((), device=device)  # sum of decay-weighted kl_real
        self.weight = torch.zeros((), device=device)  # sum of the weights (bias correction of the average)

    def __call__(self, kl_real: Tensor) -> Tensor:
        """ratio x the moving average; before any step was observed, ratio x this batch's mean KL."""
        now = kl_real.detach().float().mean()
        known = self.weight > 0
        return self.ratio * torch.where(known, self.average / self.weight.clamp(min=1e-12), now)

    @property
    def value(self) -> Tensor:
        """The margin the next step starts from (NaN before any step was observed)."""
        return self.ratio * self.average / self.weight

    def observe(self, kl_real_mean: Tensor, ok: Tensor | None = None) -> None:
        """Fold one step's batch-mean kl_real (this process's) into the average, unless the step was skipped
        (``ok`` false) or the value is not finite."""
        k = kl_real_mean.detach().float().reshape(())
        if self.world.enabled:
            k = k.clone()
            torch.distributed.all_reduce(k)  # the mean over processes: every process gets the same margin
            k = k / self.world.size
        keep = torch.isfinite(k) if ok is None else torch.isfinite(k) & ok.bool().reshape(())
        self.average = torch.where(keep, self.decay * self.average + (1 - self.decay) * k, self.average)
        self.weight = torch.where(keep, self.decay * self.weight + (1 - self.decay), self.weight)

    def state_dict(self) -> dict[str, Tensor]:
        return {"average": self.average.cpu(), "weight": self.weight.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.average.device
        self.average, self.weight = state["average"].to(device), state["weight"].to(device)


def make_margin(margin: float | str, device: torch.device, *, world: dist_.World = dist_.SINGLE):
    """The margin a run trains with: the number given, or an :class:`AutoMargin` for ``"auto"``."""
    return AutoMargin(device, world=world) if margin == "auto" else float(margin)
