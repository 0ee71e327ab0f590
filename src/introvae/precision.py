"""Mixed precision: autocast for the networks, one gradient scaler (fp16) serving both optimisers.

The losses' sums (KL, hinge, reconstruction) are always taken in fp32 (see ``objectives``).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from .config import PRECISIONS
from .errors import ConfigError, SettingWarning


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


def emulated_warning(name: str, device: torch.device, flag: str = "--precision") -> str | None:
    """A line for a reduced precision that ``device`` only emulates (bf16 or fp16 on a CPU without AVX512-BF16 /
    AVX512-FP16 or AMX): it runs many times slower than fp32 there (measured 15-20x for bf16 training)."""
    from .devices import cpu_flags, has_native_bf16

    if device.type != "cpu" or name == "fp32":
        return None
    native = has_native_bf16(device) if name == "bf16" else bool({"avx512_fp16", "amx_fp16"} & cpu_flags())
    if native:
        return None
    flags = "avx512_bf16" if name == "bf16" else "avx512_fp16"
    return (f"{flag.removeprefix('--')} {name}: this CPU has no native {name} arithmetic (no {flags} or AMX), so "
            f"it is emulated, many times slower than fp32; {flag} fp32 is the faster choice here")


def resolve(name: str, device: torch.device) -> str:
    """The precision a run trains in: ``name``, or for ``auto`` bf16 where the device computes it natively: a CUDA
    GPU that supports it (Ampere and later), or a CPU with AVX512-BF16 or AMX, where bf16 training tracked fp32 and
    ran 1.7x faster (docs/defaults-fashion-mnist.md); fp32 everywhere else (older GPUs, MPS, other CPUs)."""
    if name != "auto":
        return name
    from .devices import has_native_bf16

    return "bf16" if device.type in ("cpu", "cuda") and has_native_bf16(device) else "fp32"


def make_precision(name: str, device: torch.device, *, warn: bool = True) -> Precision:
    """fp32 (no autocast), bf16 (autocast; CPU and GPU), fp16 (autocast + one GradScaler for E and G); ``auto``
    resolved by :func:`resolve`. With ``warn`` (one process of several passes False), a precision ``device`` only
    emulates is a ``SettingWarning``."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision: must be one of {', '.join(PRECISIONS)}, got {name!r}")
    name = resolve(name, device)
    slow = emulated_warning(name, device) if warn else None
    if slow:
        warnings.warn(slow, SettingWarning, stacklevel=2)
    # The losses are sums over pixels and latent dimensions (1e2..1e4), so the default starting
    # scale of 2**16 overflows fp16 at once; 2**10 saves the first steps from being skipped.
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10) if name == "fp16" else None
    return Precision(name, device.type, scaler)
