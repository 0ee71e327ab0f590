"""Mixed precision: autocast for the networks, one gradient scaler (fp16) serving both optimisers.

The losses' sums (KL, hinge, reconstruction) are always taken in fp32 (see ``objectives``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import PRECISIONS
from .errors import ConfigError


@dataclass
class Precision:
    name: str
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def make_precision(name: str, device: torch.device) -> Precision:
    """fp32 (no autocast), bf16 (autocast; CPU and GPU), fp16 (autocast + one GradScaler for E and G)."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision: must be one of {', '.join(PRECISIONS)}, got {name!r}")
    # The losses are sums over pixels and latent dimensions (1e2..1e4), so the default starting
    # scale of 2**16 overflows fp16 at once; 2**10 saves the first steps from being skipped.
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10) if name == "fp16" else None
    return Precision(name, device.type, scaler)
