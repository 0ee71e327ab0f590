"""The order in which a run sees its training images: a function of (seed, epoch) alone.

So a resumed run sees exactly the batches an uninterrupted one would, also with another number
of processes (each step takes a global batch, and each process its slice of it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .images import to_float


def epoch_plan(num_images: int, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
               world_size: int = 1) -> list[tuple[int, Tensor]]:
    """(images of the epoch used after the step, this process's indices) for each step of one epoch.

    ``start`` counts the images of the epoch already used. With several processes each step takes a global
    batch of ``world_size * batch_size`` images and process ``rank`` gets its consecutive slice, so the
    global batches are the same whatever the split. An incomplete last batch is dropped.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_images, generator=g)
    step = batch_size * world_size
    return [(i + step, perm[i + rank * batch_size:i + (rank + 1) * batch_size])
            for i in range(start, num_images - step + 1, step)]


def batches(train, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
            world_size: int = 1, workers: int = 0, pin_memory: bool = False):
    """Yield (images of the epoch used so far, float batch on the CPU) for the steps of one epoch (see
    :func:`epoch_plan`). With ``workers`` > 0 the batches are gathered (and, for streamed data, decoded) in
    that many worker processes, ahead of the training step, into pinned memory if asked."""
    plan = _PlannedBatches(train, epoch_plan(len(train), batch_size, seed=seed, epoch=epoch, start=start,
                                             rank=rank, world_size=world_size))
    if workers == 0:
        yield from (plan[k] for k in range(len(plan)))
    else:
        yield from torch.utils.data.DataLoader(plan, batch_size=None, shuffle=False, num_workers=workers,
                                               pin_memory=pin_memory, prefetch_factor=4)


class _PlannedBatches(torch.utils.data.Dataset):
    """The batches of an epoch plan, for a DataLoader (each item is a whole batch)."""

    def __init__(self, images, plan):
        self.images, self.plan = images, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int):
        used, idx = self.plan[k]
        return used, to_float(self.images[idx])
