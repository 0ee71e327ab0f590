"""Nearest training neighbours of generated images (Appendix E): does the model memorise?"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import to_float


@torch.no_grad()
def nearest_pixel(samples: Tensor, train: Tensor, *, batch: int = 4096) -> Tensor:
    """Index of the training image closest in L2 pixel distance to each sample (on the samples' device)."""
    s = samples.flatten(1).float()
    best_d = torch.full((len(s),), float("inf"), device=s.device)
    best_i = torch.zeros(len(s), dtype=torch.long, device=s.device)
    for k in range(0, len(train), batch):
        t = train[k:k + batch].to(s.device).flatten(1).float()
        m, i = torch.cdist(s, t).min(dim=1)
        better = m < best_d
        best_d, best_i = torch.where(better, m, best_d), torch.where(better, i + k, best_i)
    return best_i


@torch.no_grad()
def nearest_feature(sample_features: Tensor, train_features: Tensor) -> Tensor:
    """Index of the training image with the highest cosine similarity of Inception features."""
    a = F.normalize(sample_features.float(), dim=1)
    b = F.normalize(train_features.float().to(a.device), dim=1)
    return (a @ b.T).argmax(dim=1)


def metric(ctx) -> dict:
    """``nearest_neighbours.png``: samples (top row), their nearest real images in pixels (L2, middle row)
    and in Inception features (cosine, bottom row)."""
    from ..grids import save_labelled_rows

    k = min(ctx.settings.neighbours, len(ctx.samples))
    if not k or ctx.out_dir is None:
        return {"picture": None}
    s = to_float(ctx.samples[:k].to(ctx.device))
    ref = ctx.reference
    pix = nearest_pixel(s, to_float(ref)).cpu()
    feat = nearest_feature(ctx.sample_features[:k], ctx.reference_features).cpu()
    rows = [s.cpu(), to_float(ref[pix]), to_float(ref[feat])]
    labels = ["samples", "nearest real image\nin pixels (L2)", "nearest real image\nin Inception\nfeatures (cosine)"]
    picture = save_labelled_rows(rows, labels, ctx.out_dir / "nearest_neighbours.png",
                                 title=f"nearest {ctx.ref_split} images (App. E)")
    return {"picture": str(picture), "samples": k}
