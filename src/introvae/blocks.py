"""The residual block of both networks (the authors' code: docs/architecture.md), and its recomputation in the
backward pass (``--checkpoint-activations``) that does not count a batch twice in the BatchNorm statistics."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def batch_norms(*modules: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``modules`` (SyncBatchNorm's included), in module order."""
    return [n for m in modules for n in m.modules() if isinstance(n, nn.modules.batchnorm._BatchNorm)]


class ResBlock(nn.Module):
    """h = LReLU(BN(conv3x3(x))); h = conv3x3(h); out = LReLU(BN(h + skip(x))), skip a bias-free 1x1 conv
    where the channel count changes. The second BatchNorm comes after the addition, as in the authors' code."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.checkpointed = False  # recompute in the backward pass instead of keeping activations
        self.inner = self._forward  # what a checkpointed block runs (compile_inner() compiles it)

    def forward(self, x: Tensor) -> Tensor:
        if self.checkpointed and self.training and torch.is_grad_enabled():
            return self._checkpointed(x)
        return self._forward(x)

    @torch.compiler.disable
    def _checkpointed(self, x: Tensor) -> Tensor:
        # Eager even inside a compiled network: torch.compile cannot trace the recomputation context below, and
        # a compiled checkpoint would save BatchNorm statistics that the next pass of the block changes in place.
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.inner, x, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), _RecomputeAsForward(self)))

    def compile_inner(self, **options) -> None:
        """Compile what a checkpointed block runs (the block's own layers; the checkpoint around them stays eager)."""
        self.inner = torch.compile(self._forward, **options)

    def _forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        return F.leaky_relu(self.bn2(self.conv2(h) + self.skip(x)), 0.2)


class _RecomputeAsForward:
    """Context of the recomputation of a checkpointed block, which must repeat its forward pass:

    * it must not count the batch twice in the BatchNorm running statistics (the forward pass did);
    * its parameters must require gradients as they did in the forward pass. The generator phase runs
      the encoder frozen but back-propagates after unfreezing it; a layer that saves different tensors
      depending on ``requires_grad`` (e.g. ``CPUSyncBatchNorm``) would otherwise not recompute what it saved.

    Created at forward time; re-entrant, since a retained graph is recomputed once per backward pass.
    """

    def __init__(self, block: nn.Module):
        self.norms = batch_norms(block)
        self.params = list(block.parameters())
        self.forward_requires_grad = [p.requires_grad for p in self.params]

    def __enter__(self):
        self.saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.norms]
        self.current_requires_grad = [p.requires_grad for p in self.params]
        for m in self.norms:
            m.momentum = 0.0
        for p, flag in zip(self.params, self.forward_requires_grad):
            p.requires_grad_(flag)

    def __exit__(self, *exc):
        for m, (mom, count) in zip(self.norms, self.saved):
            m.momentum = mom
            if count is not None:
                m.num_batches_tracked.copy_(count)
        for p, flag in zip(self.params, self.current_requires_grad):
            p.requires_grad_(flag)
