"""The encoder's Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))): sampling from it and its KL to the prior.

A leaf module: the networks (``model``) sample from it and the objectives (``objectives``) take its KL, so
neither imports the other for it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps."""
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Eq. 9, per image: 1/2 * sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1), in fp32. Shape (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)
