"""The networks of IntroVAE (Appendix B): the inference model E and the generator G.

Both are derived from ``image_size`` and a channel schedule listed from full
resolution down to 4x4; smaller images drop the highest-resolution stages.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import Config


class ResBlock(nn.Module):
    """conv3x3 -> BN -> LeakyReLU -> conv3x3 -> BN, plus the skip (1x1 conv when channels change), then LeakyReLU.

    The paper (Appendix B) names the block only; this order follows EQUATIONS.md. The
    authors' code applies the second BN *after* the addition; we follow the stated order.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.checkpointed = False  # recompute in the backward pass instead of keeping activations

    def forward(self, x: Tensor) -> Tensor:
        if self.checkpointed and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward, x, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _RecomputeAsForward(self)))
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + self.skip(x), 0.2)


class _RecomputeAsForward:
    """Context of the recomputation of a checkpointed block, which must repeat its forward pass:

    * it must not count the batch twice in the BatchNorm running statistics (the forward pass did);
    * its parameters must require gradients as they did in the forward pass. The generator step runs
      the encoder frozen (``losses.frozen``) but back-propagates after unfreezing it; a layer that saves
      different tensors depending on ``requires_grad`` (e.g. ``CPUSyncBatchNorm``) would otherwise not
      recompute what it saved.

    Created at forward time; re-entrant, since a retained graph is recomputed once per backward pass.
    """

    def __init__(self, block: nn.Module):
        self.norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.params = list(block.parameters())
        self.forward_requires_grad = [p.requires_grad for p in self.params]

    def __enter__(self):
        self.saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.norms]
        self.current_requires_grad = [p.requires_grad for p in self.params]
        for m in self.norms:
            m.momentum = 0.0
        for p, flag in zip(self.params, self.forward_requires_grad):
            p.requires_grad_(flag)

    def __exit__(self, *exc):
        for m, (mom, count) in zip(self.norms, self.saved):
            m.momentum = mom
            if count is not None:
                m.num_batches_tracked.copy_(count)
        for p, flag in zip(self.params, self.current_requires_grad):
            p.requires_grad_(flag)


class Encoder(nn.Module):
    """The inference model E(x) -> (mu, logvar).

    Conv 5x5 -> AvgPool -> [ResBlock -> AvgPool] ... down to 4x4 -> ResBlock -> FC to 2M -> split.
    """

    def __init__(self, *, image_size: int, in_channels: int, latent_dim: int, channels: tuple[int, ...]):
        super().__init__()
        ch = _stage_channels(image_size, channels)  # ch[0] at image_size ... ch[-1] at 4x4
        self.latent_dim = latent_dim
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, ch[0], 5, padding=2, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.LeakyReLU(0.2),
        )
        stages = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            stages += [nn.AvgPool2d(2), ResBlock(c_in, c_out)]
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(ch[-1] * 4 * 4, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.stages(self.stem(x))
        mu, logvar = self.fc(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """The generator G(z) -> x.

    FC with ReLU to C*4*4 -> ResBlock -> [Upsample -> ResBlock] ... -> Conv 5x5 to the image channels.
    The output is linear (no squashing), as in the authors' setup on [0, 1] pixels.
    """

    def __init__(self, *, image_size: int, in_channels: int, latent_dim: int, channels: tuple[int, ...]):
        super().__init__()
        ch = _stage_channels(image_size, channels)[::-1]  # ch[0] at 4x4 ... ch[-1] at image_size
        self.latent_dim = latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, ch[0] * 4 * 4), nn.ReLU())
        self.c0 = ch[0]
        blocks: list[nn.Module] = [ResBlock(ch[0], ch[0])]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), ResBlock(c_in, c_out)]
        self.stages = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(ch[-1], in_channels, 5, padding=2)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        return self.to_image(self.stages(h))


def _stage_channels(image_size: int, channels: tuple[int, ...]) -> tuple[int, ...]:
    n = int(math.log2(image_size)) - 1
    if len(channels) < n:
        raise ValueError(f"channels: image_size {image_size} needs {n} entries, got {len(channels)}")
    return tuple(channels[-n:])


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (drawn here unless given)."""
    return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)


class IntroVAE(nn.Module):
    """Encoder + decoder with the config that built them; the object users sample from and export.

    >>> model = IntroVAE(Config(image_size=32, latent_dim=16, channels=(8, 8, 8, 8)))
    >>> model.sample(4, seed=0).shape
    torch.Size([4, 1, 32, 32])
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        kw = dict(image_size=config.image_size, in_channels=config.in_channels,
                  latent_dim=config.latent_dim, channels=config.stage_channels)
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**kw)
        self.checkpoint_activations(config.checkpoint_activations)

    def checkpoint_activations(self, on: bool = True) -> "IntroVAE":
        """Recompute each residual block in the backward pass rather than store its activations:
        the memory of the activations shrinks to the blocks' inputs, for about one more forward pass."""
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.checkpointed = on
        return self

    # --- inference helpers (eval mode is the caller's choice; the CLI sets it) ---
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None, z: Tensor | None = None) -> Tensor:
        """``n`` generated images from z ~ N(0, I); a fixed seed gives the same images."""
        if z is None:
            g = torch.Generator().manual_seed(seed) if seed is not None else None
            z = torch.randn(n, self.config.latent_dim, generator=g)
        return self.decoder(z.to(self.device))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, sample_z: bool = False) -> Tensor:
        """Reconstructions of ``x`` through the posterior mean (or a sampled z)."""
        mu, logvar = self.encoder(x.to(self.device))
        return self.decoder(reparameterize(mu, logvar) if sample_z else mu)

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Decode ``steps`` points on the line between the posterior means of images ``a`` and ``b`` (Fig. 6)."""
        mu, _ = self.encoder(torch.stack([a, b]).to(self.device))
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        return self.decoder((1 - t) * mu[0] + t * mu[1])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- export / load: config.json + model.safetensors --------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        from safetensors.torch import save_file

        from . import __version__

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.config.save(d / "config.json")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / "model.safetensors"), metadata={"introvae_version": __version__})
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "IntroVAE":
        """Load a model written by :meth:`save_pretrained` (strictly: every weight must match)."""
        from safetensors.torch import load_file

        d = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d} is not an exported IntroVAE model: {name} is missing")
        config = Config.load(d / "config.json")
        model = cls(config)
        load_state_strict(model, load_file(str(d / "model.safetensors")), source=str(d))
        return model.eval()


def load_state_strict(model: nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    """Load every weight or fail naming what differs (never a silently half-loaded model)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ValueError(f"weights in {source} do not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: Config) -> str:
    """A one-line summary: resolution, schedule and parameter counts."""
    m = torch.device("meta")
    with m:
        model = IntroVAE(config)
    e, g = count_parameters(model.encoder), count_parameters(model.decoder)
    return (f"{config.image_size}px x{config.in_channels}, z={config.latent_dim}, "
            f"channels {list(config.stage_channels)}: encoder {e / 1e6:.2f}M, decoder {g / 1e6:.2f}M parameters")
