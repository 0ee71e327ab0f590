"""The networks' settings (Appendix B): everything that builds them, and all that an export stores."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .config_checks import LIKELIHOODS, POSITIVE_ENTRIES, POWER_OF_TWO_SIZE, at_least, check, coerce, param, plain, rule, \
    validate_fields
from .errors import ConfigError

# The paper's channel schedule at 1024 px, per resolution from 1024 down to 4x4 (Appendix B;
# docs/architecture.md). Smaller images drop its high-resolution end.
PAPER_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512, 512)


@dataclass(frozen=True)
class ModelConfig:
    """The networks (Appendix B): everything needed to build them, and nothing else."""

    image_size: int = param(32, "image side in pixels, a power of two from 16 to 1024 (images are centre-cropped "
                                "and resized)", rule=POWER_OF_TWO_SIZE, group="model")
    in_channels: int = param(1, "1 for grayscale, 3 for RGB",
                             rule=rule(lambda c: c in (1, 3), "must be 1 (grayscale) or 3 (RGB)"), group="model")
    latent_dim: int = param(128, "M, the size of the latent code z (paper: 256 at 128 px, 512 at 256 and 1024 px)",
                            rule=at_least(1), group="model")
    channels: tuple[int, ...] = param(PAPER_CHANNELS, "channels per resolution from image_size down to 4x4, e.g. "
                                      "32,64,128,128; a longer list drops its high-resolution end",
                                      rule=POSITIVE_ENTRIES,
                                      group="model")
    likelihood: str = param("gaussian", "the decoder's likelihood: gaussian (linear output, Eq. 10's squared error; "
                            "the paper) or bernoulli (sigmoid output, cross-entropy on [0, 1] pixels; a VAE baseline)",
                            choices=LIKELIHOODS, group="model")

    def __post_init__(self) -> None:
        validate_fields(self)
        s, n = self.image_size, int(math.log2(self.image_size)) - 1
        check(len(self.channels) >= n, "channels",
               f"image_size {s} needs {n} entries (one per resolution from {s} down to 4), got {len(self.channels)}")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels per resolution from ``image_size`` down to 4 (the used tail of ``channels``)."""
        return tuple(self.channels[-(int(math.log2(self.image_size)) - 1):])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown model field(s): {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**{k: coerce(known[k], v) for k, v in d.items()})
