"""The four 2D toy densities of Soft-IntroVAE's Section 5.1 (the normalising-flow literature's standard set),
drawn fresh for every batch. Each sampler takes a count and a ``torch.Generator`` and returns float32 points
of shape (n, 2); ``RADIUS`` gives the half-width r of the square [-2r, 2r]^2 their scores are binned on."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    """8 modes evenly spaced on a circle of radius 2, standard deviation 0.02, then divided by 1.414."""
    angle = torch.randint(0, 8, (n,), generator=g).float() * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return (centres + 0.02 * torch.randn(n, 2, generator=g)) / 1.414


def two_spirals(n: int, g: torch.Generator) -> Tensor:
    """Two interleaved Archimedean spirals of 1.5 turns (point symmetric), with uniform and Gaussian jitter."""
    t = torch.sqrt(torch.rand(n, generator=g)) * (3 * math.pi)  # the angle, denser towards the outside
    arm = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], dim=1) + 0.5 * torch.rand(n, 2, generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).unsqueeze(1)
    return sign * arm / 3 + 0.1 * torch.randn(n, 2, generator=g)


def checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the dark squares of a 4 x 4 checkerboard of unit squares, scaled by 2 to [-4, 4]^2."""
    x1 = 4 * torch.rand(n, generator=g) - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g).float()
    x2 = x2 + torch.floor(x1) % 2  # shift to the squares whose colour matches the column
    return 2 * torch.stack([x1, x2], dim=1)


def rings(n: int, g: torch.Generator) -> Tensor:
    """Four concentric circles of radii 3, 2.25, 1.5 and 0.75 (equal shares of the points), Gaussian noise 0.08."""
    radius = 3.0 * (torch.randint(1, 5, (n,), generator=g).float() / 4)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    points = radius.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return points + 0.08 * torch.randn(n, 2, generator=g)


DENSITIES = {"8gaussians": eight_gaussians, "2spirals": two_spirals, "checkerboard": checkerboard, "rings": rings}
RADIUS = {"8gaussians": 1.0, "2spirals": 2.0, "checkerboard": 2.0, "rings": 2.0}


def sample(name: str, n: int, *, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    g = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else seed)
    return DENSITIES[name](n, g)
