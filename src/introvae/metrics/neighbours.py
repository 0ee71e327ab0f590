"""Nearest training neighbours of generated images (Appendix E): does the model memorise?"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


@torch.no_grad()
def nearest_pixel(samples: Tensor, train: Tensor, *, batch: int = 4096) -> Tensor:
    """Index of the training image closest in L2 pixel distance to each sample."""
    s = samples.flatten(1).float()
    best_d = torch.full((len(s),), float("inf"))
    best_i = torch.zeros(len(s), dtype=torch.long)
    for k in range(0, len(train), batch):
        t = train[k:k + batch].flatten(1).float()
        d = torch.cdist(s, t)
        m, i = d.min(dim=1)
        better = m < best_d
        best_d[better], best_i[better] = m[better], i[better] + k
    return best_i


@torch.no_grad()
def nearest_feature(sample_features: Tensor, train_features: Tensor) -> Tensor:
    """Index of the training image with the highest cosine similarity of Inception features."""
    a = F.normalize(sample_features.float(), dim=1)
    b = F.normalize(train_features.float(), dim=1)
    return (a @ b.T).argmax(dim=1)
