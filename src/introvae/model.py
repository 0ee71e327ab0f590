"""The networks of IntroVAE (Appendix B): the inference model E and the generator G.

Both are derived from a :class:`ModelConfig`: ``image_size`` and a channel schedule listed from full
resolution down to 4x4, whose high-resolution end is dropped for smaller images. The block internals
and the decoder's channel placement are those of the authors' code (docs/architecture.md).
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from . import generator_stats
from .blocks import ResBlock
from .config import ModelConfig
from .posterior import kl_divergence, reparameterize
from .errors import CheckpointError, ConfigError, InputError, PlainWarning

# Bumped whenever a change of the networks makes older weights unusable (checked on load).
ARCHITECTURE = 2  # 1: introvae 0.1 (BN before the addition, mirrored decoder)


class Encoder(nn.Module):
    """E(x) -> (mu, logvar): conv5x5 -> BN -> LReLU -> AvgPool, then [ResBlock -> AvgPool] per stage down
    to 4x4, a ResBlock at 4x4, and an FC layer to 2M split into mu and logvar."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        ch = config.stage_channels  # ch[0] at image_size ... ch[-1] at 4x4
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, ch[0], 5, padding=2, bias=False),
                                  nn.BatchNorm2d(ch[0]), nn.LeakyReLU(0.2))
        stages: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            stages += [nn.AvgPool2d(2), ResBlock(c_in, c_out)]
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(ch[-1] * 4 * 4, 2 * config.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.fc(self.stages(self.stem(x)).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """G(z) -> x: FC with ReLU to c(4)x4x4, then at each resolution r from 4 up: a ResBlock to c(2r) and a
    nearest upsampling; at full size a ResBlock and a conv5x5 (with bias) to the image, linear output (the paper),
    or its sigmoid for a Bernoulli likelihood (``ModelConfig.likelihood``, a VAE baseline).

    c(r) is the encoder's channel count at resolution r. The decoder changes channels in the block *before*
    each upsampling, so it is no mirror of the encoder: at 1024 px it has 256 channels at 32 px and 16 at
    512 px (the authors' code), which keeps the high-resolution stages cheap."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        ch = config.stage_channels[::-1]  # c(4), c(8), ..., c(image_size)
        self.c4 = ch[0]
        self.fc = nn.Sequential(nn.Linear(config.latent_dim, ch[0] * 4 * 4), nn.ReLU())
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks += [ResBlock(c_in, c_out), nn.Upsample(scale_factor=2, mode="nearest")]
        blocks.append(ResBlock(ch[-1], ch[-1]))
        self.stages = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(ch[-1], config.in_channels, 5, padding=2)
        self.bernoulli = config.likelihood == "bernoulli"
        # A second set of BatchNorm statistics, for the encoder's codes; the layers' own are the prior draws'
        # (introvae.generator_stats: one set would mix both passes of Algorithm 1)
        generator_stats.register(self)

    def forward(self, z: Tensor) -> Tensor:
        out = self.to_image(self.stages(self.fc(z).view(z.shape[0], self.c4, 4, 4)))
        # A Bernoulli decoder's images are its means, sigmoid(logits), in fp32 (their log is taken in the loss)
        return torch.sigmoid(out.float()) if self.bernoulli else out


class IntroVAE(nn.Module):
    """Encoder + generator with the :class:`ModelConfig` that built them: what users sample from and export.

    >>> model = IntroVAE(ModelConfig(image_size=32, latent_dim=16, channels=(8, 8, 8, 8)))
    >>> model.eval().sample(4, seed=0).shape
    torch.Size([4, 1, 32, 32])
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"IntroVAE takes a ModelConfig (TrainConfig.model), got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.generator_source = "trained"  # or "ema": which generator load_model gave
        self.step = None  # load_model: the checkpoint's step, and the TrainConfig of its run (None for an export)
        self.run_config = None

    def checkpoint_activations(self, on: bool = True) -> "IntroVAE":
        """Recompute each residual block in the backward pass rather than store its activations."""
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.checkpointed = on
        return self

    def with_generator(self, decoder: nn.Module, source: str = "ema") -> "IntroVAE":
        """An IntroVAE sharing this encoder, with ``decoder`` as its generator (no copies)."""
        other = IntroVAE.__new__(IntroVAE)
        nn.Module.__init__(other)
        other.config, other.encoder, other.decoder, other.generator_source = self.config, self.encoder, decoder, source
        return other

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- inference (eval mode is the caller's choice; the commands set it) -----------------
    def check_images(self, x, what: str = "images") -> Tensor:
        """``x`` as a batch of this model's images: (N, C, H, W) floats in [0, 1]; uint8 images (0-255) are scaled
        to [0, 1]. Anything else is an :class:`InputError` naming the shape or type expected; float values above 2
        (0-255 images not scaled) give a warning, since the encoder would read them as meaningless."""
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError):
                raise InputError(f"{what}: expected a tensor of images, got {type(x).__name__}") from None
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            one = "; for one image, give x[None]" if tuple(x.shape) == (c, s, s) else ""
            raise InputError(f"{what}: this model takes (N, {c}, {s}, {s}) images, got shape {tuple(x.shape)}{one}")
        if x.dtype == torch.uint8:
            return x.float() / 255
        if not x.is_floating_point():
            raise InputError(f"{what}: expected floating-point values in [0, 1] (or uint8 0-255), got {x.dtype}")
        top = float(x.detach().amax()) if x.numel() else 0.0  # one host read per call, not per chunk
        if top > 2:
            warnings.warn(f"{what}: values up to {top:.0f}; the model takes images in [0, 1] (divide by 255)",
                          PlainWarning, stacklevel=3)
        return x

    def _codes(self, z, what: str = "z") -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise InputError(f"{what}: this model takes latent codes of shape (N, {self.config.latent_dim}), "
                             f"got {shape}")
        return z

    def latents(self, n: int, *, seed: int | None = None) -> Tensor:
        """``n`` draws of z ~ N(0, I), made on the CPU so that a seed gives the same z on every device."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise InputError(f"n: the number of samples must be an integer >= 0, got {n!r}")
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(int(n), self.config.latent_dim, generator=g)

    @property
    def chunk(self) -> int:
        """Images per forward pass when none is given: :func:`generation_chunk` of this model's image size."""
        return generation_chunk(self.config.image_size)

    @torch.no_grad()
    def sample(self, n: int | None = None, *, seed: int | None = None, z: Tensor | None = None,
               batch_size: int | None = None) -> Tensor:
        """Generated images from ``z`` (default: ``n`` draws with ``seed``), decoded ``batch_size`` at a time
        (default: :attr:`chunk`, bounded in memory at any size) on the model's device; returned on that device."""
        if (n is None) == (z is None):
            raise InputError("sample: give n (with an optional seed) or z, not both")
        z = self.latents(n, seed=seed) if z is None else self._codes(z)
        return torch.cat([self.decoder(c.to(self.device)) for c in z.split(batch_size or self.chunk)])

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, sample_z: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Reconstructions of ``x`` through the posterior mean (or a sampled z), on the model's device."""
        mu, logvar = self.encoder(self.check_images(x).to(self.device))
        if sample_z:
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)  # CPU draws: the same on every device
            mu = reparameterize(mu, logvar, eps)
        return generator_stats.posterior_generator(self.decoder)(mu)

    @torch.no_grad()
    def posterior_passes(self, x: Tensor, *, generator: torch.Generator | None = None
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One encoder pass over ``x`` and what evaluation reads from it: (mu, logvar, the reconstruction through
        mu, the reconstruction through a z drawn with ``generator``), each equal to what :meth:`encode` and
        :meth:`reconstruct` give for the same batch, at a third of their encoder passes."""
        mu, logvar = self.encoder(self.check_images(x).to(self.device))
        decoder = generator_stats.posterior_generator(self.decoder)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)  # CPU draws, as reconstruct's
        return mu, logvar, decoder(mu), decoder(reparameterize(mu, logvar, eps))

    @torch.no_grad()
    def encode(self, x: Tensor, *, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        """The posterior (mu, logvar) of images ``x`` in [0, 1], (N, C, H, W), on the model's device."""
        outs = [self.encoder(c.to(self.device)) for c in self.check_images(x).split(batch_size or self.chunk)]
        return torch.cat([m for m, _ in outs]), torch.cat([v for _, v in outs])

    @torch.no_grad()
    def decode(self, z: Tensor, *, batch_size: int | None = None, encoded: bool = False) -> Tensor:
        """Images from latent codes ``z`` (N, latent_dim), on the model's device. ``encoded``: the codes come from
        the encoder (reconstructions, edits of an image), which the generator normalises with the statistics of its
        passes over such codes; by default, with those of prior draws (:mod:`introvae.generator_stats`)."""
        decoder = generator_stats.posterior_generator(self.decoder) if encoded else self.decoder
        return torch.cat([decoder(c.to(self.device)) for c in self._codes(z).split(batch_size or self.chunk)])

    @torch.no_grad()
    def kl(self, x: Tensor) -> Tensor:
        """The encoder's KL to the prior of each image (Eq. 9), shape (N,): IntroVAE's encoder learns to give real
        images a small one and generated images at least the margin, so a large value reads as "unlike the
        training images" (an anomaly score)."""

        return kl_divergence(*self.encode(x))

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Decode ``steps`` points on the line between the posterior means of images ``a`` and ``b`` (Fig. 6), each
        (C, H, W) or (1, C, H, W)."""
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
            raise InputError(f"interpolate: steps must be an integer >= 2 (the two ends included), got {steps!r}")
        ends = [self.check_images(v[None] if isinstance(v, Tensor) and v.dim() == 3 else v, what)
                for v, what in ((a, "a"), (b, "b"))]
        if any(len(e) != 1 for e in ends):
            raise InputError(f"interpolate: a and b are one image each, got {len(ends[0])} and {len(ends[1])}")
        mu, _ = self.encoder(torch.cat(ends).to(self.device))
        t = torch.linspace(0, 1, int(steps), device=mu.device)[:, None]
        return generator_stats.posterior_generator(self.decoder)((1 - t) * mu[0] + t * mu[1])

    @torch.no_grad()
    def latent_directions(self, images: Tensor, k: int = 8) -> tuple[Tensor, Tensor, Tensor]:
        """The main directions of the latent space on ``images``: the principal components of their posterior
        means. Returns (mean (M,), directions (k, M) with unit norm, standard deviation along each (k,)), on the
        CPU, largest first; move a code by ``s * std[i] * directions[i]`` to edit along direction ``i``."""
        mu = self.encode(images)[0].float().cpu()
        mean = mu.mean(dim=0)
        _, singular, vh = torch.linalg.svd(mu - mean, full_matrices=False)
        k = min(k, vh.shape[0])
        std = singular[:k] / max(1, len(mu) - 1) ** 0.5
        return mean, vh[:k], std

    # --- export / load: config.json + model.safetensors ------------------------------------
    def save_pretrained(self, directory: str | Path, *, fp16: bool = False) -> Path:
        """Write ``config.json`` (the :class:`ModelConfig`) and ``model.safetensors`` (its floating-point weights in
        fp16 if asked: half the size; loading casts them back) to ``directory``."""
        import json

        from safetensors.torch import save_file

        from .version import __version__

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if fp16:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(d / "model.safetensors"), metadata={
            "introvae_version": __version__, "architecture": str(ARCHITECTURE), "generator": self.generator_source,
            **({"dtype": "float16"} if fp16 else {})})
        from .checkpoint import follow_umask

        follow_umask(d / "model.safetensors")  # safetensors writes through a 0600 temporary file
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "IntroVAE":
        """Load a model written by :meth:`save_pretrained` onto ``device`` (strictly: every weight must match)."""
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file

        d = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (d / name).is_file():
                raise CheckpointError(f"{d} is not an exported IntroVAE model: {name} is missing")
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("architecture") != str(ARCHITECTURE):
            raise CheckpointError(f"{d} was exported by introvae {meta.get('introvae_version', '0.1')}, whose networks "
                                  f"differ from this version's (architecture {ARCHITECTURE}); train or export it again")
        try:
            config = ModelConfig.from_dict(json.loads((d / "config.json").read_text()))
        except ValueError as e:
            raise CheckpointError(f"{d / 'config.json'}: {e}") from None
        model = cls(config)
        load_state_strict(model, load_file(str(d / "model.safetensors")), source=str(d))
        model.generator_source = meta.get("generator", "trained")
        return model.to(device).eval()


# Bytes of activations one generated image may take in a chunk: the decoder's widest full-resolution stages hold
# about 64 fp32 values per pixel at once (16-32 channels, a few tensors alive), so 1 GiB gives 4 images at 1024 px,
# 64 at 256 px and the cap of 256 at 64 px and below.
GENERATION_BUDGET = 2**30


def generation_chunk(image_size: int, *, budget: int = GENERATION_BUDGET, cap: int = 256) -> int:
    """Images generated, encoded or decoded per pass by default, from the image size: a memory bound in bytes."""
    return max(1, min(cap, budget // (64 * 4 * image_size * image_size)))


def load_state_strict(model: nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    """Load every weight or fail naming what differs (never a silently half-loaded model). A generator's second set
    of BatchNorm statistics, which older versions lack, is filled in (:func:`generator_stats.fill_missing`)."""
    state = generator_stats.fill_missing(model, state)
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
        raise CheckpointError(f"weights in {source} do not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: ModelConfig) -> str:
    """A one-line summary: resolution, schedule and parameter counts (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = IntroVAE(config)
    e, g = count_parameters(model.encoder), count_parameters(model.decoder)
    likelihood = ", Bernoulli decoder" if config.likelihood == "bernoulli" else ""
    return (f"{config.image_size}px x{config.in_channels}, z={config.latent_dim}, channels {list(config.stage_channels)}"
            f"{likelihood}: encoder {e / 1e6:.2f}M, decoder {g / 1e6:.2f}M parameters")
