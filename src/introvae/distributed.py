"""Several processes through ``torchrun``: one per device, PyTorch's DistributedDataParallel for the
gradients, rank 0 for everything written to disk.

``torchrun --nproc_per_node N -m introvae train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; this module
turns them into a process group (NCCL on GPUs, gloo on CPUs) and a device per process. Without
torchrun (or with one process) nothing here is used and training is the single-process code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process when it is not set)."""
    try:
        return World(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them): {e}") from None


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group and return this process's device: ``cuda:LOCAL_RANK`` on GPUs."""
    if not world.enabled:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {world.local_rank}: this node has only {torch.cuda.device_count()} GPU(s); "
                             "start at most that many processes per node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    global _CONTROL_GROUP, _OWN_GROUP
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds the group to this process's GPU: NCCL's barriers (teardown's among them) then
        # synchronise on it, not on the device under the current context
        dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                                timeout=datetime.timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
        _OWN_GROUP = True
    if _CONTROL_GROUP is None and dist.get_backend() != "gloo":
        # host-side flags need a CPU (gloo) group, also when the caller made the default group (NCCL rejects CPU
        # tensors); every process makes it, as new_group requires
        _CONTROL_GROUP = dist.new_group(backend="gloo")
    return device


def teardown(*, synchronise: bool = False) -> None:
    """Leave the process group if we made it; a group the caller made is the caller's to destroy.

    ``synchronise``: every process got here the normal way, so they meet at a barrier before the group is
    destroyed, and none frees it while a peer still sends on it (gloo's destructor then waits on a connection
    for ever). Not on an error path: a peer that failed never comes to the barrier.
    """
    global _CONTROL_GROUP, _OWN_GROUP
    if dist.is_initialized() and (_OWN_GROUP or _CONTROL_GROUP is not None):
        group = None if _OWN_GROUP else _CONTROL_GROUP  # None: the default group
        if synchronise:
            dist.barrier(group=group)
        dist.destroy_process_group(group)
    _CONTROL_GROUP, _OWN_GROUP = None, False


def agreed(flag: Tensor, world: World) -> Tensor:
    """``flag`` (a bool tensor) and-ed over the processes, on the device: no host synchronisation."""
    if not world.enabled:
        return flag
    t = flag.float().reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.reshape(()) > 0


def all_true(flag: bool | Tensor, world: World, device: torch.device) -> bool:
    """Whether ``flag`` holds on every process, read on the host (:func:`agreed`, then one sync)."""
    return bool(agreed(torch.as_tensor(flag, device=device), world))


def any_true(flags: list[bool], world: World) -> list[bool]:
    """For each host-side flag (a signal received, a checkpoint due by the clock), whether it is set on any
    process; one all-reduce over a CPU (gloo) group, so that a GPU run is not synchronised with its device."""
    if not world.enabled:
        return list(flags)
    t = torch.tensor([float(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL_GROUP)
    return [bool(v) for v in t.tolist()]


_CONTROL_GROUP = None  # gloo group for host-side flags (the default group when it is gloo already)
_OWN_GROUP = False  # whether setup() made the default process group (then teardown destroys it)


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every process."""
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --- BatchNorm across processes ------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """y = sum of x over the processes; the gradient of x is the sum of y's gradients over the processes
    (every process's loss depends on the shared y)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with the batch statistics taken over all processes, for CPU processes (gloo).

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; on GPUs it is used instead. This one sums the
    per-channel count, sum and sum of squares over the processes with a differentiable all-reduce,
    so gradients flow through the shared statistics as
    in a single process with the whole batch. Same parameters and buffers as BatchNorm2d, so
    checkpoints move freely between the two.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dim=(0, 2, 3)), xf.square().sum(dim=(0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean.square()).clamp_min(0.0)  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=f)
        y = (xf - mean[:, None, None]) * torch.rsqrt(var + self.eps)[:, None, None]
        if self.affine:
            y = y * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``module`` synchronised across processes: torch's SyncBatchNorm on GPUs,
    :class:`CPUSyncBatchNorm` on CPUs. Parameters and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CPUSyncBatchNorm):
            new = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module


def replicate(model: nn.Module, world: World, device: torch.device) -> dict[str, nn.Module] | None:
    """DistributedDataParallel wrappers of the encoder and the generator (None with one process).

    Each network gets its own wrapper because Algorithm 1 back-propagates into one network at a time;
    ``broadcast_buffers`` is off because the BatchNorm statistics are either synchronised (``--sync-bn``)
    or per process (rank 0's are checkpointed).
    """
    if not world.enabled:
        return None
    import inspect

    kw = {"device_ids": [device.index] if device.type == "cuda" else None}
    # Newer PyTorch renames broadcast_buffers (the buffers are equal at the start anyway: same seed).
    ddp = nn.parallel.DistributedDataParallel
    kw["forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
       else "broadcast_buffers"] = False
    return {"encoder": ddp(model.encoder, **kw), "decoder": ddp(model.decoder, **kw)}


__all__ = ["World", "SINGLE", "world_from_env", "setup", "teardown", "agreed", "all_true", "any_true", "barrier",
           "broadcast_object", "CPUSyncBatchNorm", "convert_sync_batchnorm", "replicate"]
