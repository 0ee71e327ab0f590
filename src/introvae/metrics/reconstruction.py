"""Reconstruction quality on held-out images: MSE, PSNR and SSIM (Fig. 3 in numbers)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import to_float


@torch.no_grad()
def reconstruction_metrics(model, images: Tensor, *, sample_z: bool = False, batch: int = 256,
                           seed: int = 0) -> dict[str, float]:
    """Mean MSE, PSNR (dB, on [0, 1] pixels, per image then averaged) and SSIM between ``images`` (uint8 or
    float in [0, 1]) and their reconstructions through the posterior mean (or a sampled z), computed on the
    model's device."""
    g = torch.Generator().manual_seed(seed)
    device = getattr(model, "device", torch.device("cpu"))
    scores = []
    for k in range(0, len(images), batch):
        x = images[k:k + batch].to(device)
        x = to_float(x) if x.dtype == torch.uint8 else x
        scores.append(_scores(model.reconstruct(x, sample_z=sample_z, generator=g), x))
    return _means(scores)


@torch.no_grad()
def held_out_metrics(model, images: Tensor, *, seed: int = 0, batch: int = 256) -> dict:
    """:func:`reconstruction_metrics` through the posterior mean and through a sampled z (drawn with ``seed``), and
    the encoder's mean KL (Eq. 9: its "realness" score of real images), from one encoder pass per batch
    (:meth:`IntroVAE.posterior_passes`): the same numbers as the three computed apart, at 3 of their 5 passes."""
    from ..posterior import kl_divergence

    g = torch.Generator().manual_seed(seed)
    mean, sampled, kls = [], [], []
    for k in range(0, len(images), batch):
        x = images[k:k + batch].to(model.device)
        x = to_float(x) if x.dtype == torch.uint8 else x
        mu, logvar, r_mean, r_sampled = model.posterior_passes(x, generator=g)
        kls.append(kl_divergence(mu, logvar))
        mean.append(_scores(r_mean, x))
        sampled.append(_scores(r_sampled, x))
    return {"posterior_mean": _means(mean), "sampled_z": _means(sampled), "kl_real": float(torch.cat(kls).mean())}


def _scores(r: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: MSE, PSNR and SSIM of reconstructions ``r`` against ``x``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    r = r.float().clamp(0, 1)
    e = (r - x).pow(2).flatten(1).mean(1)
    w = 11 if x.shape[-1] > 22 else 7  # the standard 11x11 window where it fits, else 7x7
    ssim = structural_similarity_index_measure(r, x, data_range=1.0, reduction="none", kernel_size=w,
                                               sigma=1.5 * (w - 1) / 10)
    return e, 10 * torch.log10(1.0 / e.clamp_min(1e-10)), ssim


def _means(scores: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, float]:
    return {name: float(torch.cat([s[i] for s in scores]).mean()) for i, name in enumerate(("mse", "psnr", "ssim"))}


def metric(ctx) -> dict:
    """Reconstruction quality of the held-out images, through the posterior mean and a sampled z, and the
    encoder's mean KL of them."""
    held_out = ctx.held_out
    return {**held_out_metrics(ctx.model, held_out, seed=ctx.settings.seed, batch=ctx.settings.batch_size),
            "images": len(held_out), "split": "held-out" if len(ctx.data.test) else "train"}
