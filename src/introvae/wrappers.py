"""The modules the training passes call: DistributedDataParallel and torch.compile around the encoder and the
decoder, for the network a phase updates and for the one it runs frozen."""

from __future__ import annotations

import torch
from torch import nn

from . import distributed as dist_
from .config import TrainConfig
from .distributed import World
from .blocks import ResBlock
from .model import IntroVAE

# Options of torch.compile for --compile (the tests swap in a backend that compiles in seconds).
COMPILE_OPTIONS: dict = {}


def training_wrappers(model: IntroVAE, config: TrainConfig, world: World, device: torch.device
                      ) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The modules the training passes call: for the network a phase updates, DistributedDataParallel and/or
    torch.compile of E and G; for the frozen one (no gradient reaches it, so no DistributedDataParallel),
    torch.compile of the network itself under --compile, else the network."""
    plain = {"encoder": model.encoder, "decoder": model.decoder}
    replicas = dist_.replicate(model, world, device)
    nets = replicas or dict(plain)
    frozen = dict(plain)
    if config.compile:  # the training passes only; sampling and evaluation stay eager
        import torch._functorch.config as functorch_config

        # Algorithm 1 back-propagates through the shared forward pass twice (retain_graph), which compiled
        # backward functions that free ("donate") their saved buffers refuse. Older torch has no such setting
        # (and donates nothing).
        if hasattr(functorch_config, "donated_buffer"):
            functorch_config.donated_buffer = False
        nets = {k: torch.compile(m, **COMPILE_OPTIONS) for k, m in nets.items()}
        # frozen passes: without DistributedDataParallel the same compiled module serves (dynamo compiles a
        # variant for parameters that require no gradient); with it, a compiled network of its own
        frozen = {k: torch.compile(m, **COMPILE_OPTIONS) for k, m in plain.items()} if replicas else dict(nets)
        if config.checkpoint_activations:  # checkpointed blocks break the graph: compile them apart
            import torch._dynamo as dynamo

            blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
            # One compiled variant per block, and per block in a frozen or recomputing pass: all share one
            # function, whose default limit of 8 variants would leave the rest eager.
            name = "recompile_limit" if hasattr(dynamo.config, "recompile_limit") else "cache_size_limit"
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), 4 * len(blocks)))  # older torch
            for m in blocks:
                m.compile_inner(**COMPILE_OPTIONS)
    return nets, frozen
