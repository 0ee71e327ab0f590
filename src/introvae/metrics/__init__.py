"""The metric registry: name -> function of a :class:`MetricContext`, as ``evaluate`` and training use them.

FID (Inception features of samples against real images), precision/recall/density/coverage on the same
features, MS-SSIM diversity, reconstruction quality of held-out images, and nearest training neighbours
(Appendix E). Adding a metric means one function
``metric(ctx) -> dict`` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from . import msssim, neighbours, prdc, reconstruction
from .context import EvalSettings, MetricContext
from .fid import fid_metric

METRICS: dict[str, Callable[[MetricContext], dict]] = {
    "fid": fid_metric,
    "precision_recall": prdc.metric,
    "ms_ssim": msssim.metric,
    "reconstruction": reconstruction.metric,
    "neighbours": neighbours.metric,
}
MODEL_METRICS = tuple(METRICS)  # what `introvae evaluate MODEL` computes
IMAGE_METRICS = ("fid", "precision_recall", "ms_ssim")  # what it computes for a folder of images (no encoder to reconstruct with)


def measure(names, ctx: MetricContext) -> dict[str, dict]:
    """The named metrics of ``ctx``, in order; they share its samples and features."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        from ..errors import MetricError

        raise MetricError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRICS)})")
    return {name: METRICS[name](ctx) for name in names}


__all__ = ["EvalSettings", "IMAGE_METRICS", "METRICS", "MODEL_METRICS", "MetricContext", "measure"]
