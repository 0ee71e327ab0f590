"""Nearest training neighbours of generated images (Appendix E): does the model memorise?"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import to_float


CHUNK_BYTES = 256 * 2**20  # reference images converted to float at a time: bounded at any image size


@torch.no_grad()
def nearest_k(samples: Tensor, train: Tensor, k: int = 1, *, chunk_bytes: int = CHUNK_BYTES) -> Tensor:
    """Indices (N, k) of the ``k`` training images closest in L2 pixel distance to each sample, nearest first (on
    the samples' device). ``train`` is uint8 (or float in [0, 1]) on the host; it is streamed to the device
    ``chunk_bytes`` of fp32 at a time (4,096 images at 32 px, 21 at 1024 px), never converted whole."""
    s = samples.flatten(1).float()
    k = min(k, len(train))
    best_d = torch.full((len(s), 0), float("inf"), device=s.device)
    best_i = torch.zeros((len(s), 0), dtype=torch.long, device=s.device)
    batch = max(1, chunk_bytes // (4 * train[0].numel())) if len(train) else 1
    for start in range(0, len(train), batch):
        t = train[start:start + batch].to(s.device).flatten(1).float()
        if train.dtype == torch.uint8:
            t = t.div_(255.0)
        d = torch.cdist(s, t)
        d, i = torch.cat([best_d, d], 1), torch.cat([best_i, torch.arange(start, start + len(t), device=s.device)
                                                     .expand(len(s), -1)], 1)
        best_d, pick = d.topk(k, dim=1, largest=False)
        best_i = i.gather(1, pick)
    return best_i


def nearest_pixel(samples: Tensor, train: Tensor, *, chunk_bytes: int = CHUNK_BYTES) -> Tensor:
    """Index of the training image closest in L2 pixel distance to each sample (:func:`nearest_k` with k = 1)."""
    return nearest_k(samples, train, 1, chunk_bytes=chunk_bytes)[:, 0]


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
    pix = nearest_pixel(s, ref).cpu()  # uint8 references, streamed (not converted whole)
    feat = nearest_feature(ctx.sample_features[:k], ctx.reference_features).cpu()
    rows = [s.cpu(), to_float(ref[pix]), to_float(ref[feat])]
    labels = ["samples", "nearest real image\nin pixels (L2)", "nearest real image\nin Inception\nfeatures (cosine)"]
    picture = save_labelled_rows(rows, labels, ctx.out_dir / "nearest_neighbours.png",
                                 title=f"nearest {ctx.ref_split} images (App. E)")
    return {"picture": str(picture), "samples": k}
