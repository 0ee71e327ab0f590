"""Devices are passed, never assumed: the one place that turns a ``--device`` name into a device."""

from __future__ import annotations

import contextlib

import torch

from .errors import UserError

DEVICE_HELP = "auto (the GPU if there is one, else the CPU), cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device called ``name``; a device this machine does not have is a :class:`UserError`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"device: {name!r} is not a device; use {DEVICE_HELP}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"device: {name!r} asked for, but this machine has no CUDA device "
                            f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"device: {name!r} asked for, but this machine has {count} CUDA device(s): "
                            f"cuda:0 to cuda:{count - 1}")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UserError(f"device: {name!r} asked for, but this machine has no MPS device; use --device cpu")
        return dev
    raise UserError(f"device: {name!r} is not supported; use {DEVICE_HELP}")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (an empty set where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA device that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere oneDNN emulates bf16, many times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- arithmetic policy on CUDA -----------------------------------------------------------------------------
def training_backends(device: torch.device) -> None:
    """Settings for training on ``device``: on CUDA, cuDNN picks its fastest convolution per shape
    (``cudnn.benchmark``; our shapes are fixed) and fp32 matmuls and convolutions may use TF32 tensor cores
    (A100 and later), which the run's first line says. Nothing to set on a CPU."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def tf32_words(device: torch.device, precision: str) -> str:
    """How the first line of a run states TF32: only for fp32 on a GPU that has it."""
    if device.type == "cuda" and precision == "fp32" and torch.cuda.get_device_capability(device)[0] >= 8:
        return " (TF32 matmuls and convolutions)"
    return ""


@contextlib.contextmanager
def true_fp32(device: torch.device):
    """fp32 arithmetic that is fp32 on every device: TF32 off while inside (for FID and precision/recall
    features, so that a score does not depend on the GPU it was computed on); the settings are put back after."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
