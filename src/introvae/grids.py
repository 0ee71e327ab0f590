"""Image grids for snapshots and the CLI."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from .data import save_image


def make_grid(images: Tensor, nrow: int, *, padding: int = 2, min_cell: int = 64) -> Tensor:
    """Tile float images (N, C, H, W) into one image (C, H', W'), ``nrow`` per row, on a white
    background; small images are enlarged (nearest neighbour) so that a cell is at least ``min_cell`` px."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    scale = max(1, -(-min_cell // h))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
        h, w = h * scale, w * scale
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = torch.ones(c, rows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def save_grid(images: Tensor, path: str | Path, nrow: int) -> Path:
    path = Path(path)
    save_image(make_grid(images, nrow), path)
    return path


def interleave_rows(real: Tensor, rec: Tensor, nrow: int) -> Tensor:
    """Rows of real images, each followed by the row of their reconstructions."""
    out = []
    for i in range(0, len(real), nrow):
        out += [real[i:i + nrow], rec[i:i + nrow]]
    return torch.cat(out)
