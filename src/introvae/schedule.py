"""A run's schedule in steps: the VAE warm-up, then the game with ``alpha_early``, then with ``alpha``.

The trainer and the 2D runs read the segment a step is in and the weight alpha in force from here; the
checkpoint stores the boundaries in steps, and :meth:`Schedule.rescaled` keeps them in images seen when a run
resumes with another global batch. ("Phase" stays the word for the two half-steps of Algorithm 1.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

SEGMENTS = ("warm-up", "early", "main")


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int = 0  # steps 0 .. warmup_steps - 1 train the plain VAE (alpha = 0)
    alpha_early_steps: int = 0  # steps before this one (after the warm-up) play the game with alpha_early

    @classmethod
    def of(cls, config, num_train: int, processes: int = 1) -> "Schedule":
        """The schedule a :class:`~introvae.config.TrainConfig` asks for, in steps of its global batch."""
        return cls(config.warmup_steps(num_train, processes), config.alpha_early_steps(num_train, processes))

    def segment(self, step: int) -> str:
        """The segment (one of :data:`SEGMENTS`) that step ``step`` (0-based) is in."""
        if step < self.warmup_steps:
            return "warm-up"
        return "early" if step < self.alpha_early_steps else "main"

    def alpha_at(self, step: int, config) -> float | None:
        """alpha at step ``step``: see :meth:`alpha_of`."""
        return self.alpha_of(self.segment(step), config)

    @staticmethod
    def alpha_of(segment: str, config) -> float | None:
        """alpha in ``segment``: ``alpha_early`` early in the run, 0 in the warm-up and for the plain VAE, None
        (no such weight) for Soft-IntroVAE after its warm-up, whose adversarial weights are beta_neg and gamma_r."""
        if config.objective == "vae" or segment == "warm-up":
            return 0.0
        if config.objective == "soft-introvae":
            return None
        return config.alpha_early if segment == "early" else config.alpha

    def rescaled(self, step: int, old_batch: int, new_batch: int) -> "Schedule":
        """The boundaries still ahead of ``step`` moved so that they fall after as many images as before, when
        the global batch changes from ``old_batch`` to ``new_batch`` (a resume with another number of processes)."""
        def move(boundary: int) -> int:
            return same_images(boundary, step, old_batch, new_batch)

        return replace(self, warmup_steps=move(self.warmup_steps), alpha_early_steps=move(self.alpha_early_steps))


def same_images(boundary: int, step: int, old_batch: int, new_batch: int) -> int:
    """The step that comes after as many images as ``boundary`` did, for the steps after ``step`` taken with a
    global batch of ``new_batch`` instead of ``old_batch`` (a boundary already passed stays where it is)."""
    if boundary <= step:
        return boundary
    return step + math.ceil((boundary - step) * old_batch / new_batch)
