"""The 2D density benchmark of Soft-IntroVAE (Section 5.1): toy densities, MLP networks, KL/JSD scores, and
training with any of the objectives (``introvae train --data 8gaussians --objective soft-introvae``)."""

from .densities import DENSITIES, RADIUS, sample
from .networks import ToyVAE
from .run import ToyConfig, evaluate, is_run, load_run, train, write_samples
from .scores import format_scores, write_scores

__all__ = ["DENSITIES", "RADIUS", "ToyConfig", "ToyVAE", "evaluate", "format_scores", "is_run", "load_run", "sample",
           "train", "write_samples",
           "write_scores"]
