"""How long a long job will take, said once before most of it runs (measured from its first steps)."""

from __future__ import annotations

import time
from collections.abc import Callable

# An introspective step (Algorithm 1: the encoder on real, reconstructed and sampled images, the generator
# through the encoder again) costs this many VAE warm-up steps; measured 2.2-2.7x on the faces and
# Fashion-MNIST presets (stats.jsonl images_per_s before and after the warm-up).
INTROSPECTIVE_COST = 2.5
ANNOUNCE_ABOVE_S = 60.0


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class TrainingEstimate:
    """Times the steps of a run and announces, once, the time left when it is over a minute, after
    ``measure_steps`` timed steps (the run's first step, which builds kernels and caches, is not timed). While
    the run is still in a VAE warm-up of over a minute, the introspective steps are extrapolated
    (``INTROSPECTIVE_COST``) and timed again when they start, with a second line only if that moves the estimate
    by more than a quarter; after a shorter warm-up the introspective steps are timed before anything is said."""

    def __init__(self, *, end: int, warmup_end: int, say: Callable[[str], None], measure_steps: int = 20,
                 introspective_cost: float = INTROSPECTIVE_COST):
        self.end, self.warmup_end, self.say = end, warmup_end, say
        self.measure_steps, self.cost = measure_steps, introspective_cost
        self.state = "first"  # first -> measuring -> (awaiting the introspective steps -> measuring) -> done
        self.mark = (0, 0.0)  # (steps done, time) where the timing began
        self.announced: float | None = None  # the time left that was said, and when
        self.announced_at = 0.0

    def step_done(self, step: int) -> None:
        """Call after every step with the number of steps done."""
        if self.state == "done":
            return
        now = time.perf_counter()
        first_introspective = step == self.warmup_end + 1
        if self.state == "first" or (first_introspective and self.mark[0] <= self.warmup_end):
            self.mark, self.state = (step, now), "measuring"  # time only steps of one kind
            return
        if self.state != "measuring" or step - self.mark[0] < self.measure_steps:
            return
        per_step = (now - self.mark[1]) / (step - self.mark[0])
        extrapolated = step <= self.warmup_end < self.end
        left = per_step * (max(0, self.warmup_end - step) + (self.cost if extrapolated else 1.0)
                           * (self.end - max(step, self.warmup_end)))
        if extrapolated and self.announced is None and per_step * (self.warmup_end - step) < ANNOUNCE_ABOVE_S:
            self.state = "awaiting"  # a short warm-up: time the introspective steps rather than guess them
            return
        if self.announced is None and left > ANNOUNCE_ABOVE_S:
            note = (f"; the introspective steps after the warm-up counted as {self.cost:g} warm-up steps each "
                    f"until measured" if extrapolated else "")
            self.say(f"training: {self.end - step} steps left, about {minutes(left)} (timed over "
                     f"{step - self.mark[0]} steps{note})")
            self.announced, self.announced_at = left, now
        elif self.announced is not None and abs(left - (self.announced - (now - self.announced_at))) > 0.25 * left:
            self.say(f"training: timed over the first introspective steps, about {minutes(left)} left")
        self.state = "awaiting" if extrapolated and self.announced is not None else "done"
