"""The objectives: IntroVAE's losses (Eq. 9-12), Soft-IntroVAE's, and the plain VAE, as phases of Algorithm 1.

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

from .posterior import kl_divergence, reparameterize

Noise = Callable[[tuple[int, ...]], Tensor]  # standard normal draws of a shape, on the batch's device


# Bernoulli means are kept this far from 0 and 1, so that a pixel costs at most -log(1e-6) = 13.8 nats.
BERNOULLI_EPS = 1e-6


def reconstruction_error(x_r: Tensor, x: Tensor, likelihood: str = "gaussian") -> Tensor:
    """The negative log-likelihood of ``x`` under the decoder's output ``x_r``, per image, shape (B,).

    ``gaussian`` (the paper): Eq. 10, 1/2 * sum over all pixel values of (x_r - x)^2 (a unit-variance Gaussian, up to
    a constant). ``bernoulli`` (a baseline VAE; not in the paper): ``x_r`` are the sigmoid decoder's means in (0, 1)
    and the error is the cross-entropy -sum [x log x_r + (1 - x) log(1 - x_r)] on pixels in [0, 1] (grey values
    count as soft targets, so a perfect reconstruction still costs their entropy)."""
    x_r, x = x_r.float(), x.float()
    if likelihood == "bernoulli":
        p = x_r.clamp(BERNOULLI_EPS, 1 - BERNOULLI_EPS)
        return -(x * p.log() + (1 - x) * torch.log1p(-p)).flatten(1).sum(dim=1)
    if likelihood != "gaussian":
        raise ValueError(f"likelihood must be gaussian or bernoulli, got {likelihood!r}")
    return 0.5 * (x_r - x).pow(2).flatten(1).sum(dim=1)


def reconstruction_loss(x_r: Tensor, x: Tensor, likelihood: str = "gaussian") -> Tensor:
    """L_AE of a minibatch: Eq. 10 (or the Bernoulli cross-entropy) averaged over the images."""
    return reconstruction_error(x_r, x, likelihood).mean()


def squared_error(y: Tensor, x: Tensor) -> Tensor:
    """Soft-IntroVAE's rec(x, y) per image: the plain sum of squares (no 1/2, unlike Eq. 10). Shape (B,)."""
    return (y.float() - x.float()).pow(2).flatten(1).sum(dim=1)


def hinge(margin: float | Tensor, kl: Tensor) -> Tensor:
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
    noise: Noise | None = None  # for the phases that draw more z (Soft-IntroVAE re-encodes generated images)


class IntroVAELoss:
    """Algorithm 1: ``forward``, then ``encoder_phase`` (Eq. 11, updates E), then ``generator_phase``
    (Eq. 12, updates G), the generator's losses computed after the encoder's update."""

    phases = {"encoder": "encoder", "generator": "decoder"}  # phase -> the network it updates

    def __init__(self, *, margin: float | Callable[[Tensor], Tensor], alpha: float, beta: float,
                 likelihood: str = "gaussian"):
        self.margin, self.alpha, self.beta = margin, alpha, beta  # a number, or kl_real -> m (margin.AutoMargin)
        self.likelihood = likelihood  # the decoder's (ModelConfig.likelihood): which L_AE

    def forward(self, nets, x: Tensor, noise: Noise) -> Pass:
        """Z <- reparam(E(X)); X_r <- G(Z); X_p <- G(Z_p), Z_p ~ N(0, I)."""
        mu, logvar = nets.encoder(x)
        with nets.posterior():  # the generator keeps one set of running statistics per kind of code
            x_r = nets.decoder(reparameterize(mu.float(), logvar.float(), noise(mu.shape)))
        x_p = nets.decoder(noise(mu.shape))  # a separate pass: its own BatchNorm statistics, as in Algorithm 1
        return Pass(x, mu, logvar, x_r, x_p, noise)

    def encoder_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 11: L_E = L_REG(Z) + alpha * sum_s [m - L_REG(E(ng(X_s)))]+ + beta * L_AE. ng() keeps L_E from G."""
        kl_real = kl_divergence(f.mu, f.logvar)
        # new_full fills on the device (no host-to-device copy in the inner loop)
        m = self.margin(kl_real) if callable(self.margin) else kl_real.new_full((), float(self.margin))
        with nets.generated():  # passes over generated images (their BatchNorm statistics: see step.TrainStep)
            kl_rec, kl_fake = kl_divergence(*nets.encoder(f.x_r.detach())), kl_divergence(*nets.encoder(f.x_p.detach()))
        l_ae = reconstruction_loss(f.x_r, f.x, self.likelihood)
        adversarial = hinge(m, kl_rec).mean() + hinge(m, kl_fake).mean()
        loss = kl_real.mean() + self.alpha * adversarial + self.beta * l_ae
        return loss, {"reconstruction": l_ae, "kl_real": kl_real.mean(), "kl_rec": kl_rec.mean(),
                      "kl_fake": kl_fake.mean(), "margin": m}

    def generator_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 12: L_G = alpha * sum_s L_REG(E(X_s)) + beta * L_AE, through the encoder as it now is."""
        with nets.generated():  # the encoder judges them as in its own phase
            kl_rec, kl_fake = kl_divergence(*nets.encoder(f.x_r)), kl_divergence(*nets.encoder(f.x_p))
        l_ae = reconstruction_loss(f.x_r, f.x, self.likelihood)
        return self.alpha * (kl_rec.mean() + kl_fake.mean()) + self.beta * l_ae, {}


class VAELoss:
    """A plain VAE on the same networks, with weight ``beta`` on the reconstruction: IntroVAE with alpha = 0,
    and its warm-up. Nothing is fed back through the encoder.

    With ``prior_statistics`` (the VAE baseline) each step also runs the generator once on prior draws, without
    gradients and outside the loss, only so that its BatchNorm layers track the statistics of the codes it samples
    from (generator_stats): its one pass in the loss is over the encoder's codes, whose statistics would otherwise
    normalise its samples too (5 epochs on Fashion-MNIST: FID 93.9 with them, 73.3 with prior draws' statistics
    re-estimated after training, 74.7 tracked in training by another run). The weights train exactly as without it,
    but for the random draws it takes. The warm-up of the two-pass objectives leaves it off: the game's own prior
    pass takes over within a few hundred steps, and their training stays as it was."""

    phases = {"encoder": "encoder", "generator": "decoder"}

    def __init__(self, *, beta: float, likelihood: str = "gaussian", weight: float = 1.0,
                 prior_statistics: bool = False):
        self.beta, self.likelihood = beta, likelihood
        # ``weight`` scales the whole loss. Within the VAE it changes nothing (Adam is invariant to it); it sets how
        # large the warm-up's gradients are against the game's that follow, which Adam's moment estimates carry
        # over the switch for a few thousand steps (Soft-IntroVAE's warm-up: see make_objective).
        self.weight = weight
        self.prior_statistics = prior_statistics

    def forward(self, nets, x: Tensor, noise: Noise) -> Pass:
        mu, logvar = nets.encoder(x)
        if not self.prior_statistics:  # one pass, one set of statistics (the encoder's codes')
            return Pass(x, mu, logvar, nets.decoder(reparameterize(mu.float(), logvar.float(), noise(mu.shape))))
        with nets.posterior():
            x_r = nets.decoder(reparameterize(mu.float(), logvar.float(), noise(mu.shape)))
        with torch.no_grad():  # tracks the prior draws' statistics in the layers; no graph, no loss
            nets.decoder(noise(mu.shape))
        return Pass(x, mu, logvar, x_r)

    def encoder_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """The negative ELBO: L_REG(Z) + beta * L_AE (times ``weight``)."""
        kl_real, l_ae = kl_divergence(f.mu, f.logvar), reconstruction_loss(f.x_r, f.x, self.likelihood)
        return self.weight * (kl_real.mean() + self.beta * l_ae), {"reconstruction": l_ae, "kl_real": kl_real.mean()}

    def generator_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """The part of the ELBO that depends on G: beta * L_AE (times ``weight``)."""
        return self.weight * self.beta * reconstruction_loss(f.x_r, f.x, self.likelihood), {}


class SoftIntroVAELoss:
    """Soft-IntroVAE (Daniel & Tamar, CVPR 2021; ../shared/paper/SOFT_INTROVAE.md): Algorithm 1 with the hinge
    [m - KL]+ on generated images replaced by a smooth exponential of their whole ELBO, so no margin.

    ``s = 1 / (C*H*W)`` scales every sum to a per-dimension value; for 2D points (two values) it is the
    authors' 0.5. ``rec`` is a plain sum of squares (:func:`squared_error`), as in the authors' code."""

    phases = {"encoder": "encoder", "generator": "decoder"}

    def __init__(self, *, beta_rec: float, beta_kl: float, beta_neg: float, gamma_r: float, target_grad: bool = False):
        self.beta_rec, self.beta_kl, self.beta_neg, self.gamma_r = beta_rec, beta_kl, beta_neg, gamma_r
        # The paper's ELBO(ng(x_r)) detaches x_r everywhere. The authors' code compares x_r's re-reconstruction
        # with x_r itself undetached, so that term's gradient also reaches E through x_r = G(reparam(E(x)));
        # ``target_grad`` does the same, to compare with their numbers.
        self.target_grad = target_grad

    forward = IntroVAELoss.forward  # the same shared pass; the phases re-encode x_r and x_p

    def _through_vae(self, nets, y: Tensor, noise: Noise, *, detach_z: bool,
                     target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """KL(y) and rec(y, G(reparam(E(y)))) per image; with ``detach_z`` no gradient flows back into E
        through G's input (the generator phase's ng(z')). ``target``: what the reconstruction is compared with
        (default ng(y))."""
        mu, logvar = nets.encoder(y)
        z = reparameterize(mu.float(), logvar.float(), noise(mu.shape))
        with nets.posterior():  # the encoder's codes: the generator's statistics for them (generator_stats)
            y_r = nets.decoder(z.detach() if detach_z else z)
        return kl_divergence(mu, logvar), squared_error(y_r, y.detach() if target is None else target)

    def encoder_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """L_E = s (beta_rec rec(x, x_r) + beta_kl KL(x)) + 1/4 sum_{y = ng(x_r), ng(x_p)} mean exp(-2 s ELBO(y)),
        ELBO(y) = beta_rec rec(y, G(reparam(E(y)))) + beta_neg KL(y), each generated image through the VAE."""
        s = 1.0 / f.x[0].numel()
        kl_real, rec = kl_divergence(f.mu, f.logvar), squared_error(f.x_r, f.x)
        with nets.generated():  # passes over generated images (their BatchNorm statistics: see step.TrainStep)
            kl_rec, rec_rec = self._through_vae(nets, f.x_r.detach(), f.noise, detach_z=False,
                                                target=f.x_r if self.target_grad else None)
            kl_fake, rec_fake = self._through_vae(nets, f.x_p.detach(), f.noise, detach_z=False)
        elbo_rec = self.beta_rec * rec_rec + self.beta_neg * kl_rec
        elbo_fake = self.beta_rec * rec_fake + self.beta_neg * kl_fake
        exp_elbo = torch.exp(-2 * s * elbo_rec).mean() + torch.exp(-2 * s * elbo_fake).mean()
        loss = s * (self.beta_rec * rec.mean() + self.beta_kl * kl_real.mean()) + 0.25 * exp_elbo
        return loss, {"reconstruction": reconstruction_loss(f.x_r, f.x), "kl_real": kl_real.mean(),
                      "kl_rec": kl_rec.mean(), "kl_fake": kl_fake.mean(), "exp_elbo": exp_elbo / 2}

    def generator_phase(self, nets, f: Pass) -> tuple[Tensor, dict[str, Tensor]]:
        """L_G = s (beta_rec rec(x, x_r) + beta_kl/2 (KL(x_r) + KL(x_p))
        + gamma_r beta_rec/2 (rec(ng(x_r), G(ng(z_r'))) + rec(ng(x_p), G(ng(z_p'))))), through the encoder as it now is."""
        s = 1.0 / f.x[0].numel()
        with nets.generated():  # the encoder judges them as in its own phase
            kl_rec, rec_rec = self._through_vae(nets, f.x_r, f.noise, detach_z=True)
            kl_fake, rec_fake = self._through_vae(nets, f.x_p, f.noise, detach_z=True)
        loss = s * (self.beta_rec * squared_error(f.x_r, f.x).mean()
                    + self.beta_kl * 0.5 * (kl_rec.mean() + kl_fake.mean())
                    + self.gamma_r * self.beta_rec * 0.5 * (rec_rec.mean() + rec_fake.mean()))
        return loss, {}


def vae_beta(beta_rec: float, beta_kl: float) -> float:
    """The plain VAE's beta (weight of Eq. 10's 1/2 sum of squares) with Soft-IntroVAE's balance of
    reconstruction and KL: s (beta_rec rec + beta_kl KL) = s beta_kl (KL + beta L_AE) for beta = 2 beta_rec / beta_kl."""
    return 2 * beta_rec / beta_kl


def make_objective(config, *, warmup: bool = False, margin=None, alpha: float | None = None):
    """The objective a :class:`TrainConfig` trains with (the plain VAE during the warm-up, and for alpha = 0).
    ``margin``: the run's margin object (:func:`introvae.margin.make_margin`); default ``config.margin``.
    ``alpha``: the weight in force (``config.alpha_early`` early in a run); default ``config.alpha``."""
    if config.objective == "soft-introvae":
        if warmup:
            # The authors' warm-up loss, beta_rec rec + beta_kl KL (no s): weight beta_kl on KL + beta L_AE. Its scale
            # against the game's s (...) decides the step sizes Adam takes for the first thousands of steps of the
            # game (on 2D points the game's gradients are half the warm-up's, as in their code; introvae 0.7 and
            # before used weight 1, 1/beta_kl times theirs: 6.7x the game's on 8gaussians).
            return VAELoss(beta=vae_beta(config.beta_rec, config.beta_kl), weight=config.beta_kl)
        return SoftIntroVAELoss(beta_rec=config.beta_rec, beta_kl=config.beta_kl, beta_neg=config.beta_neg,
                                gamma_r=config.gamma_r, target_grad=config.target_grad)
    alpha, likelihood = config.alpha if alpha is None else alpha, config.likelihood
    if config.objective == "vae" or warmup or alpha == 0:
        # the VAE baseline tracks its prior draws' statistics; the warm-up and an alpha-0 stretch of a game do not
        return VAELoss(beta=config.beta, likelihood=likelihood, prior_statistics=config.objective == "vae")
    margin = config.margin if margin is None else margin
    if margin == "auto":
        raise ValueError("margin 'auto' is a margin.AutoMargin the run owns: pass it as margin=")
    return IntroVAELoss(margin=margin, alpha=alpha, beta=config.beta, likelihood=likelihood)
