"""Image grids for the training pictures and the CLI."""

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


def save_labelled_rows(rows: list[Tensor], labels: list[str], path: str | Path, *, title: str = "") -> Path:
    """One grid row per tensor of images (each (n, C, H, W), the same n), with its label on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows[0])
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * n + 2.2, 1.25 * len(rows) + (0.4 if title else 0)))
    for ax, images, label in zip([axes] if len(rows) == 1 else axes, rows, labels):
        grid = make_grid(images, n).permute(1, 2, 0).numpy()
        ax.imshow(grid[..., 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def interleave_rows(real: Tensor, rec: Tensor, nrow: int) -> Tensor:
    """Rows of real images, each followed by the row of their reconstructions."""
    out = []
    for i in range(0, len(real), nrow):
        out += [real[i:i + nrow], rec[i:i + nrow]]
    return torch.cat(out)
