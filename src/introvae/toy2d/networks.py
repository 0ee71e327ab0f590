"""The 2D benchmark's networks (SOFT_INTROVAE.md, Section 5.1): MLP encoder and decoder with 3 hidden layers of
256 units and ReLU, z of size 2, counted as the Soft-IntroVAE authors' code counts them: an input layer to 256
units, then 3 hidden layers of 256 to 256, each with a ReLU (four ReLU layers in all, then a linear output). Same interface as the image networks (``encoder(x) -> (mu, logvar)``,
``decoder(z) -> x``), so every objective and the generic step (``introvae.step``) train them unchanged."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..posterior import reparameterize


def _mlp(n_in: int, n_out: int, hidden: int, layers: int) -> nn.Sequential:
    """n_in -> hidden, then ``layers`` hidden -> hidden, each with a ReLU, then a linear layer to n_out. Until
    introvae 0.5 ``layers`` counted the input layer too (one ReLU layer fewer than the authors' networks)."""
    widths = [n_in, *[hidden] * (layers + 1)]
    body = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*body, nn.Linear(widths[-1], n_out))


class ToyEncoder(nn.Module):
    def __init__(self, latent_dim: int = 2, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.net = _mlp(2, 2 * latent_dim, hidden, layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class ToyVAE(nn.Module):
    """Encoder E and decoder (generator) G for 2D points."""

    def __init__(self, latent_dim: int = 2, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ToyEncoder(latent_dim, hidden, layers)
        self.decoder = _mlp(latent_dim, 2, hidden, layers)
        # What a score was measured with (scores.json, the results registry): the depth changed in introvae 0.6
        self.description = f"MLPs with {layers + 1} ReLU layers of {hidden} (the authors'), z = {latent_dim}"

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.decoder(z.to(next(self.parameters()).device))

    @torch.no_grad()
    def elbo_loss(self, x: Tensor, *, beta_rec: float, beta_kl: float, samples: int = 1, seed: int = 0) -> Tensor:
        """s (beta_rec rec + beta_kl KL) per point (s = 1/2), averaged over ``samples`` draws of z: the model's
        density on a grid is exp(-this), the picture of the paper's Fig. 2."""
        from ..objectives import kl_divergence, squared_error

        g = torch.Generator().manual_seed(seed)  # drawn on the host: the same density on every device
        mu, logvar = self.encoder(x)
        rec = torch.stack([squared_error(self.decoder(reparameterize(
            mu, logvar, torch.randn(mu.shape, generator=g).to(x.device))), x) for _ in range(samples)]).mean(0)
        return 0.5 * (beta_rec * rec + beta_kl * kl_divergence(mu, logvar))
