"""Reconstruction quality on held-out images: MSE, PSNR and SSIM (Fig. 3 in numbers)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def reconstruction_metrics(model, images: Tensor, *, sample_z: bool = False, batch: int = 256,
                           seed: int = 0) -> dict[str, float]:
    """Mean MSE, PSNR (dB, on [0, 1] pixels, per image then averaged) and SSIM between ``images``
    and their reconstructions through the posterior mean (or a sampled z)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    torch.manual_seed(seed)
    mse, psnr, ssim = [], [], []
    for k in range(0, len(images), batch):
        x = images[k:k + batch]
        r = model.reconstruct(x, sample_z=sample_z).float().clamp(0, 1).cpu()
        e = (r - x).pow(2).flatten(1).mean(1)
        mse.append(e)
        psnr.append(10 * torch.log10(1.0 / e.clamp_min(1e-10)))
        k = 11 if x.shape[-1] > 22 else 7  # the standard 11x11 window where it fits, else 7x7
        ssim.append(structural_similarity_index_measure(r, x, data_range=1.0, reduction="none",
                                                        kernel_size=k, sigma=1.5 * (k - 1) / 10))
    return {"mse": float(torch.cat(mse).mean()), "psnr": float(torch.cat(psnr).mean()),
            "ssim": float(torch.cat(ssim).mean())}

