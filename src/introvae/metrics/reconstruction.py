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
    from torchmetrics.functional.image import structural_similarity_index_measure

    g = torch.Generator().manual_seed(seed)
    device = getattr(model, "device", torch.device("cpu"))
    mse, psnr, ssim = [], [], []
    for k in range(0, len(images), batch):
        x = images[k:k + batch].to(device)
        x = to_float(x) if x.dtype == torch.uint8 else x
        r = model.reconstruct(x, sample_z=sample_z, generator=g).float().clamp(0, 1)
        e = (r - x).pow(2).flatten(1).mean(1)
        mse.append(e)
        psnr.append(10 * torch.log10(1.0 / e.clamp_min(1e-10)))
        w = 11 if x.shape[-1] > 22 else 7  # the standard 11x11 window where it fits, else 7x7
        ssim.append(structural_similarity_index_measure(r, x, data_range=1.0, reduction="none",
                                                        kernel_size=w, sigma=1.5 * (w - 1) / 10))
    return {"mse": float(torch.cat(mse).mean()), "psnr": float(torch.cat(psnr).mean()),
            "ssim": float(torch.cat(ssim).mean())}


@torch.no_grad()
def mean_kl(model, images: Tensor, *, batch: int = 256) -> float:
    """The encoder's mean KL (Eq. 9) of ``images`` (uint8): its "realness" score of real images, in eval mode."""
    from ..objectives import kl_divergence

    device = getattr(model, "device", torch.device("cpu"))
    kls = [kl_divergence(*model.encoder(to_float(images[k:k + batch].to(device)))) for k in range(0, len(images), batch)]
    return float(torch.cat(kls).mean())


def metric(ctx) -> dict:
    """Reconstruction quality of the held-out images, through the posterior mean and a sampled z, and the
    encoder's mean KL of them."""
    held_out, seed, b = ctx.held_out, ctx.settings.seed, ctx.settings.batch_size
    return {"posterior_mean": reconstruction_metrics(ctx.model, held_out, batch=b),
            "sampled_z": reconstruction_metrics(ctx.model, held_out, sample_z=True, seed=seed, batch=b),
            "kl_real": mean_kl(ctx.model, held_out, batch=b),
            "images": len(held_out), "split": "held-out" if len(ctx.data.test) else "train"}
