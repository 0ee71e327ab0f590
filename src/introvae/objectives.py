"""The objectives: IntroVAE's losses (Eq. 9-12) and the plain VAE, as phases of Algorithm 1.

An objective holds only the maths. ``forward`` is the pass both phases share; each phase method
returns its loss and the values to log, and ``phases`` says which one network each phase updates.
Everything else (back-propagating into that network only, the optimiser steps, the divergence guard,
mixed precision, several processes) is the generic machinery of :mod:`introvae.step`.

``nets.encoder`` / ``nets.decoder`` are the networks as a phase may use them: the one the phase updates
(through its DistributedDataParallel or compiled wrapper, if any), and the other one frozen (gradients
flow through it into the updated network, but none reach its weights and its BatchNorm statistics stay).
``nets.generated()`` marks the encoder's passes over generated images.
Every sum (KL, hinge, reconstruction) is taken in fp32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import reparameterize

Noise = Callable[[tuple[int, ...]], Tensor]  # standard normal draws of a shape, on the batch's device


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Eq. 9, per image: 1/2 * sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1). Shape (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def reconstruction_error(x_r: Tensor, x: Tensor) -> Tensor:
    """Eq. 10, per image: 1/2 * sum over all pixel values of (x_r - x)^2. Shape (B,)."""
    return 0.5 * (x_r.float() - x.float()).pow(2).flatten(1).sum(dim=1)


def reconstruction_loss(x_r: Tensor, x: Tensor) -> Tensor:
    """L_AE of a minibatch: Eq. 10 averaged over the images."""
    return reconstruction_error(x_r, x).mean()


def hinge(margin: float, kl: Tensor) -> Tensor:
    """Eq. 11's per-sample hinge [m - KL]+ (shape of ``kl``)."""
    return torch.clamp(margin - kl.float(), min=0.0)


@dataclass
class Pass:
    """What the shared forward pass computed for one batch."""

    x: Tensor
    mu: Tensor
    logvar: Tensor
    x_r: Tensor
    x_p: Tensor | None = None


class IntroVAELoss:
    """Algorithm 1: ``forward``, then ``encoder_phase`` (Eq. 11, updates E), then ``generator_phase``
    (Eq. 12, updates G), the generator's losses computed after the encoder's update."""

    phases = {"encoder": "encoder", "generator": "decoder"}  # phase -> the network it updates

    def __init__(self, *, margin: float, alpha: float, beta: float):
        self.margin, self.alpha, self.beta = margin, alpha, beta

    def forward(self, nets, x: Tensor, noise: Noise) -> Pass:
        """Z <- reparam(E(X)); X_r <- G(Z); X_p <- G(Z_p), Z_p ~ N(0, I)."""
        mu, logvar = nets.encoder(x)
        x_r = nets.decoder(reparameterize(mu.float(), logvar.float(), noise(mu.shape)))
        x_p = nets.decoder(noise(mu.shape))  # a separate pass: its own BatchNorm statistics, as in Algorithm 1
        return Pass(x, mu, logvar, x_r, x_p)

    def encoder_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 11: L_E = L_REG(Z) + alpha * sum_s [m - L_REG(E(ng(X_s)))]+ + beta * L_AE. ng() keeps L_E from G."""
        kl_real = kl_divergence(f.mu, f.logvar)
        with nets.generated():  # passes over generated images (their BatchNorm statistics: see step.TrainStep)
            kl_rec, kl_fake = kl_divergence(*nets.encoder(f.x_r.detach())), kl_divergence(*nets.encoder(f.x_p.detach()))
        l_ae = reconstruction_loss(f.x_r, f.x)
        adversarial = hinge(self.margin, kl_rec).mean() + hinge(self.margin, kl_fake).mean()
        loss = kl_real.mean() + self.alpha * adversarial + self.beta * l_ae
        return loss, {"reconstruction": l_ae, "kl_real": kl_real.mean(), "kl_rec": kl_rec.mean(),
                      "kl_fake": kl_fake.mean()}

    def generator_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 12: L_G = alpha * sum_s L_REG(E(X_s)) + beta * L_AE, through the encoder as it now is."""
        kl_rec, kl_fake = kl_divergence(*nets.encoder(f.x_r)), kl_divergence(*nets.encoder(f.x_p))
        return self.alpha * (kl_rec.mean() + kl_fake.mean()) + self.beta * reconstruction_loss(f.x_r, f.x), {}


class VAELoss:
    """A plain VAE on the same networks, with weight ``beta`` on the reconstruction: IntroVAE with alpha = 0,
    and its warm-up. Nothing is fed back through the encoder."""

    phases = {"encoder": "encoder", "generator": "decoder"}

    def __init__(self, *, beta: float):
        self.beta = beta

    def forward(self, nets, x: Tensor, noise: Noise) -> Pass:
        mu, logvar = nets.encoder(x)
        return Pass(x, mu, logvar, nets.decoder(reparameterize(mu.float(), logvar.float(), noise(mu.shape))))

    def encoder_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """The negative ELBO: L_REG(Z) + beta * L_AE."""
        kl_real, l_ae = kl_divergence(f.mu, f.logvar), reconstruction_loss(f.x_r, f.x)
        return kl_real.mean() + self.beta * l_ae, {"reconstruction": l_ae, "kl_real": kl_real.mean()}

    def generator_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """The part of the ELBO that depends on G: beta * L_AE."""
        return self.beta * reconstruction_loss(f.x_r, f.x), {}


def make_objective(config, *, warmup: bool = False):
    """The objective a :class:`TrainConfig` trains with (the plain VAE during the warm-up, and for alpha = 0)."""
    if config.objective == "vae" or warmup or config.alpha == 0:
        return VAELoss(beta=config.beta)
    return IntroVAELoss(margin=config.margin, alpha=config.alpha, beta=config.beta)
