"""MS-SSIM (Wang et al. 2003) as a measure of sample diversity (Section 4.4), via torchmetrics.

The standard setting (an 11x11 window, five scales) needs images larger than 160 px. For
smaller images we keep as many scales as fit, shrinking the window only when fewer than
three would; the weights of the scales used are the standard ones, renormalised to sum to 1.
The setting used is part of every result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import to_float

STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(image_size: int) -> tuple[int, int]:
    """(window size, number of scales) for square images of ``image_size`` px."""
    best = (3, 1)
    for kernel in (11, 7, 5, 3):
        scales = 0
        while scales < 5 and (kernel - 1) * 2 ** scales < image_size:
            scales += 1
        if scales >= 3 or scales == 5:
            return kernel, scales
        best = max(best, (kernel, scales), key=lambda ks: ks[1])
    return best


def ms_ssim(x: Tensor, y: Tensor, *, image_size: int | None = None) -> Tensor:
    """MS-SSIM of each pair (x[i], y[i]), float images in [0, 1]; shape (N,), on their device."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    kernel, scales = ms_ssim_settings(image_size or x.shape[-1])
    w = torch.tensor(STANDARD_WEIGHTS[:scales])
    betas = tuple((w / w.sum()).tolist())
    # torchmetrics sizes a Gaussian window from sigma alone (2 * int(3.5 sigma + 0.5) + 1), so the
    # standard sigma 1.5 of the 11x11 window is scaled with the window: 0.9 -> 7x7, 0.6 -> 5x5, 0.3 -> 3x3.
    sigma = 1.5 * (kernel - 1) / 10
    return multiscale_structural_similarity_index_measure(
        x.float().clamp(0, 1), y.float().clamp(0, 1), kernel_size=kernel, sigma=sigma, betas=betas,
        data_range=1.0, reduction="none")


PAIR_BYTES = 2**30  # working memory of one batch of pairs: both images and the filtered maps, about 24 fp32 copies


def pairs_per_batch(image: Tensor, *, budget: int = PAIR_BYTES, cap: int = 500) -> int:
    """Pairs scored at a time: 500 for small images, fewer for large ones (28 at 256 px RGB, 1 at 1024 px)."""
    return max(1, min(cap, budget // (2 * 24 * 4 * image.numel())))


@torch.no_grad()
def sample_diversity(images: Tensor, *, pairs: int, seed: int = 0, batch: int | None = None,
                     device: torch.device | str = "cpu") -> float:
    """Mean MS-SSIM over ``pairs`` random pairs of distinct images (lower = more diverse); ``images`` are
    uint8 or float in [0, 1], on the CPU; each batch of pairs (default: :func:`pairs_per_batch`, bounded in
    bytes) is scored on ``device``."""
    n = len(images)
    if n < 2:
        raise ValueError("MS-SSIM diversity needs at least 2 images")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=g)
    j = (i + torch.randint(1, n, (pairs,), generator=g)) % n  # j != i
    as_float = to_float if images.dtype == torch.uint8 else (lambda t: t)
    batch = batch or pairs_per_batch(images[0])
    total = 0.0
    for k in range(0, pairs, batch):
        a, b = (as_float(images[idx[k:k + batch]].to(device)) for idx in (i, j))
        total += float(ms_ssim(a, b).double().sum())
    return total / pairs


def metric(ctx) -> dict:
    """MS-SSIM diversity of the scored images, and of real image pairs for reference."""
    s = ctx.settings
    kernel, scales = ms_ssim_settings(ctx.image_size)
    out = {"value": sample_diversity(ctx.samples, pairs=s.pairs, seed=s.seed, device=ctx.device),
           "pairs": s.pairs, "window": kernel, "scales": scales}
    if ctx.model is not None:
        out["real_data_value"] = sample_diversity(ctx.reference, pairs=s.pairs, seed=s.seed, device=ctx.device)
    return out
