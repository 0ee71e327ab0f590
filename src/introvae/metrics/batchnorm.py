"""Which BatchNorm statistics a scored model normalises with: a stated protocol, printed with every result.

Generator (``--bn-protocol``):

* ``eval`` (default): the running statistics of training, as a user samples (since 0.7.8 the generator's passes
  over prior draws'; before, a mix with its passes over the encoder's codes: :mod:`introvae.generator_stats`);
* ``train``: the statistics of each generated chunk (``--batch-size`` images), as Soft-IntroVAE's published
  FIDs were computed; comparable with those numbers only at the same batch size;
* ``recalibrate``: running statistics re-estimated on fresh samples before scoring (their exact average
  over the chunks), which removes the drift of the training-time averages;
* ``posterior``: the generator's statistics of the encoder's codes (its set for reconstructions), which a VAE of
  0.7.8 and before sampled with: the same weights scored as such a VAE would score them (a model that never tracked
  that set keeps its running statistics, as ``eval``).

Encoder (``--encoder-stats``): ``running`` (the training-time averages, to which the encoder's passes over
generated images contribute) or ``real`` (re-estimated on real training images before scoring).
The model given is never changed: a protocol works on copies of the networks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .. import generator_stats
from ..blocks import batch_norms
from ..config_checks import BN_PROTOCOLS, ENCODER_STATS
from ..data import to_float
from ..errors import MetricError


@torch.no_grad()
def reestimated(module: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """A copy of ``module`` whose BatchNorm running statistics are the average over ``batches`` (each run
    through the copy in training mode); in eval mode."""
    out = copy.deepcopy(module)
    for bn in batch_norms(out):
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: every batch counts the same
    out.train()
    for x in batches:
        out(x)
    return out.eval()


def generator_with_protocol(model, protocol: str, *, samples: int, batch_size: int, seed: int):
    """``model`` with its generator normalising as ``protocol`` says (see the module's docstring)."""
    if protocol not in BN_PROTOCOLS:
        raise MetricError(f"bn-protocol: must be one of {', '.join(BN_PROTOCOLS)}, got {protocol!r}")
    if protocol == "eval":
        return model
    if protocol == "posterior":
        return model.with_generator(generator_stats.posterior_copy(model.decoder), source=model.generator_source)
    if protocol == "train":
        decoder = copy.deepcopy(model.decoder).train()
        for bn in batch_norms(decoder):
            bn.momentum = 0.0  # batch statistics, and the running ones untouched
    else:
        z = model.latents(samples, seed=seed + 1)  # fresh draws, not the scored ones
        decoder = reestimated(model.decoder, (c.to(model.device) for c in z.split(batch_size)))
    return model.with_generator(decoder, source=model.generator_source)


def encoder_with_stats(model, stats: str, images: Tensor | None, *, batch_size: int):
    """``model`` with its encoder's statistics as ``stats`` says: ``running``, or re-estimated on ``images``
    (uint8, real training images; only read for ``real``)."""
    if stats not in ENCODER_STATS:
        raise MetricError(f"encoder-stats: must be one of {', '.join(ENCODER_STATS)}, got {stats!r}")
    if stats == "running":
        return model
    encoder = reestimated(model.encoder, (to_float(images[k:k + batch_size].to(model.device))
                                          for k in range(0, len(images), batch_size)))
    other = model.with_generator(model.decoder, source=model.generator_source)
    other.encoder = encoder
    return other
