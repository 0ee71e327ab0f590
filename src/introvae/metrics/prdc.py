"""Fidelity and diversity apart: precision and recall (Kynkäänniemi et al., NeurIPS 2019), density and
coverage (Naeem et al., ICML 2020), from the same Inception features as FID.

Each set's k-nearest-neighbour balls (k = 5, as in both papers) approximate its manifold. Precision: the
share of samples inside the real manifold (fidelity). Recall: the share of real images inside the samples'
manifold (diversity). Density counts how many real balls hold each sample (robust to outliers; 1 on average
for identical distributions). Coverage: the share of real balls that hold at least one sample. Computed with
``prdc``, the reference implementation of Naeem et al.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from torch import Tensor

from ..errors import MetricError

NEAREST_K = 5


def precision_recall(real: Tensor, fake: Tensor, *, k: int = NEAREST_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` features against ``real`` ones, (N, D) each."""
    try:
        from prdc import compute_prdc
    except ImportError:
        raise MetricError("precision and recall need the prdc package: pip install 'introvae[metrics]'") from None
    if min(len(real), len(fake)) < k + 2:  # each point's k nearest others
        raise MetricError(f"precision and recall need at least k + 2 = {k + 2} images on each side")
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        out = compute_prdc(np.ascontiguousarray(real.float().numpy()), np.ascontiguousarray(fake.float().numpy()), k)
    return {name: float(v) for name, v in out.items()}


def metric(ctx) -> dict:
    """Precision, recall, density and coverage of the scored images, on the features FID uses (skipped, with
    the reason, when a side has fewer than k + 2 images)."""
    sizes = {"k": NEAREST_K, "samples": len(ctx.samples), "reference_images": len(ctx.reference)}
    if min(sizes["samples"], sizes["reference_images"]) < NEAREST_K + 2:
        return {**sizes, "skipped": f"needs at least {NEAREST_K + 2} images on each side"}
    return {**precision_recall(ctx.reference_features, ctx.sample_features), **sizes}
