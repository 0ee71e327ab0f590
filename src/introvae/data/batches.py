"""The order in which a run sees its training images, and which of them it sees mirrored: a function of
(seed, epoch) alone.

So a resumed run sees exactly the batches an uninterrupted one would, also with another number
of processes (each step takes a global batch, and each process its slice of it).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .images import to_float


def epoch_plan(num_images: int, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
               world_size: int = 1, mirror: bool = False) -> list[tuple[int, Tensor, Tensor | None]]:
    """(images of the epoch used after the step, this process's indices, which of them to flip left-right or
    None) for each step of one epoch.

    ``start`` counts the images of the epoch already used. With several processes each step takes a global
    batch of ``world_size * batch_size`` images and process ``rank`` gets its consecutive slice, so the
    global batches are the same whatever the split. An incomplete last batch is dropped. The flips are drawn
    after the order, from the same generator, so the order is the same with and without ``mirror``.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_images, generator=g)
    flips = torch.rand(num_images, generator=g) < 0.5 if mirror else None
    step = batch_size * world_size
    plan = []
    for i in range(start, num_images - step + 1, step):
        mine = slice(i + rank * batch_size, i + (rank + 1) * batch_size)
        plan.append((i + step, perm[mine], None if flips is None else flips[mine]))
    return plan


def batches(train, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
            world_size: int = 1, workers: int = 0, pin_memory: bool = False, mirror: bool = False,
            raw: bool = False):
    """Yield (images of the epoch used so far, float batch on the CPU) for the steps of one epoch (see
    :func:`epoch_plan`), with the planned images flipped left-right if ``mirror``. With ``workers`` > 0 the
    batches are gathered (and, for streamed data, decoded) in that many worker processes, ahead of the training
    step, into pinned memory if asked.

    ``raw``: yield (used, uint8 batch, flip mask or None) instead, for :func:`to_device`, which converts and
    flips on the device: a quarter of the bytes cross to a GPU, and the host does no float work."""
    plan = _PlannedBatches(train, epoch_plan(len(train), batch_size, seed=seed, epoch=epoch, start=start,
                                             rank=rank, world_size=world_size, mirror=mirror), raw=raw)
    if workers == 0:
        for k in range(len(plan)):
            item = plan[k]
            yield (item[0], item[1].pin_memory(), *item[2:]) if pin_memory and raw else item
    else:
        yield from torch.utils.data.DataLoader(plan, batch_size=None, shuffle=False, num_workers=workers,
                                               pin_memory=pin_memory, prefetch_factor=4)


def auto_workers(requested: int, *, device: torch.device, streamed: bool) -> int:
    """The loader worker processes a run uses: ``requested`` if >= 0; for -1 (auto), none where the images are
    in memory or mapped from disk (gathering a batch is a copy) or the device is a CPU (workers would take its
    cores), and on a GPU with streamed images (decoded per batch) the node's cores shared among its training
    processes, one kept for each of them, at most 8 each."""
    if requested >= 0:
        return requested
    if device.type != "cuda" or not streamed:
        return 0
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // per_node - 1))


def to_device(x: Tensor, flip: Tensor | None, device: torch.device, *, channels_last: bool = False) -> Tensor:
    """A raw batch (uint8, and its flip mask) as the float batch :func:`batches` would give, made on ``device``:
    copied as uint8 (asynchronously from pinned memory), then scaled, flipped (``where``: no host sync) and laid
    out there. The same values as converting on the host: scaling by 255 and flipping are exact."""
    x = to_float(x.to(device, non_blocking=True))
    if flip is not None:
        f = flip.to(device, non_blocking=True).reshape(-1, *([1] * (x.dim() - 1)))
        x = torch.where(f, x.flip(-1), x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class _PlannedBatches(torch.utils.data.Dataset):
    """The batches of an epoch plan, for a DataLoader (each item is a whole batch)."""

    def __init__(self, images, plan, *, raw: bool = False):
        self.images, self.plan, self.raw = images, plan, raw

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int):
        used, idx, flip = self.plan[k]
        if self.raw:
            return used, self.images[idx].contiguous(), flip
        x = to_float(self.images[idx])
        if flip is not None and flip.any():
            x[flip] = x[flip].flip(-1)
        return used, x
