"""A stand-in accelerator for CPU-only machines, so that CI catches device mistakes without a GPU.

Inside :func:`fake_accelerator`, tensors moved to (or made on) the ``meta`` device become
:class:`OnAccelerator` tensors: they report ``device == meta`` but hold real CPU data, so every
operation computes real values. A :class:`TorchDispatchMode` sees every ATen operation (also those
of autograd's backward pass, optimisers and TorchScript) and raises, as CUDA does, when one mixes
accelerator tensors with host tensors. ``torch.cuda``'s ``Expected all tensors to be on the same
device`` error, which a GPU user meets at the first snapshot or sample, thus appears on a CPU.

Why ``meta`` and not ``cuda``: autograd asks the device's guard for every tensor that requires
gradients, and a CPU-only build of torch has no CUDA guard (the process aborts); ``meta`` has one.

What CUDA allows is allowed here too: ``copy_`` and ``_to_copy`` across devices, and CPU 0-d
tensors as scalars in pointwise operations.

Mixed precision: ``torch.autocast("meta", dtype=...)`` (which torch refuses) is accepted inside the block and
emulated by rounding: the operations CUDA autocasts to a lower precision (matrix products and convolutions) round
their floating inputs and their output to that dtype, while storage stays fp32 so that autograd's bookkeeping is
untouched. Values thus carry bf16/fp16 rounding and fp16 overflows to inf as on a GPU, and the code paths of the
reduced precisions (autocast contexts, the fp16 GradScaler on the device) run and are counted like fp32's. Stricter than CUDA in one respect: a CPU generator
cannot drive a draw made on the accelerator (CUDA raises for that as well).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

ACCELERATOR = torch.device("meta")
_CROSS_DEVICE = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}


class DeviceMixError(RuntimeError):
    """An operation took tensors on the accelerator and on the host."""


class OnAccelerator(torch.Tensor):
    """A tensor that says it lives on the accelerator; its values live in ``inner`` (a CPU tensor)."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor, requires_grad: bool | None = None):
        return torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            device=ACCELERATOR, requires_grad=inner.requires_grad if requires_grad is None else requires_grad)

    def __init__(self, inner: torch.Tensor, requires_grad: bool | None = None):
        self.inner = inner

    def __repr__(self) -> str:
        return f"OnAccelerator({self.inner!r})"

    # Reading values on the host works as on a GPU (a synchronisation there), and is counted.
    def tolist(self):
        if _ACTIVE:
            _ACTIVE[-1].host_read("tolist")
        return self.inner.tolist()

    def __format__(self, spec: str) -> str:
        return self.inner.__format__(spec)

    def __reduce_ex__(self, protocol):
        # torch.save of accelerator tensors, loaded with map_location="cpu": plain CPU tensors.
        return self.inner.__reduce_ex__(protocol)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an accelerator tensor outside fake_accelerator()")


_ACTIVE: list = []  # the fake accelerator's mode while one is active (tolist is not an ATen operation)
# What CUDA's autocast runs in the lower precision (its "lower_precision_fp" list, the ops our networks use).
_AUTOCAST_LOW = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                 torch.ops.aten.convolution.default, torch.ops.aten.baddbmm.default}
_HOST_READS = {torch.ops.aten._local_scalar_dense.default}  # .item(), bool(), int(), float() of a device tensor


class _Mode(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0  # operations that ran on the accelerator
        self.host_reads = 0  # device-to-host reads: each one a synchronisation on a GPU
        self.read_ops: list[str] = []
        self.autocast: list[torch.dtype | None] = []  # the dtype of each enclosing emulated autocast

    def host_read(self, what: str) -> None:
        self.host_reads += 1
        self.read_ops.append(what)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        seen = {"accelerator": False, "host": [], "host_scalar": False}

        def unwrap(t):
            if isinstance(t, OnAccelerator):
                seen["accelerator"] = True
                return t.inner
            if isinstance(t, torch.Tensor) and t.device.type == ACCELERATOR.type:
                raise RuntimeError(f"{func}: a real {ACCELERATOR} tensor escaped the fake accelerator (a gap in "
                                   "tests/fake_accelerator.py, not in the code under test)")
            if isinstance(t, torch.Tensor):
                if t.dim() == 0 and t.device.type == "cpu":
                    seen["host_scalar"] = True
                else:
                    seen["host"].append(tuple(t.shape))
            if isinstance(t, torch.Generator) and t.device.type == "cpu":
                seen["cpu_generator"] = True
            return t

        a, k = tree_map(unwrap, args), tree_map(unwrap, kwargs)
        if seen["accelerator"] and (func in _HOST_READS or (func in _CROSS_DEVICE and _target_is_host(func, args,
                                                                                                   kwargs))):
            self.host_read(str(func))
        target = k.get("device")
        to_accelerator = target is not None and torch.device(target).type == ACCELERATOR.type
        if to_accelerator:
            k["device"] = torch.device("cpu")
        on_accelerator = to_accelerator or (target is None and seen["accelerator"])
        if func not in _CROSS_DEVICE:
            if seen["accelerator"] and seen["host"]:
                raise DeviceMixError(f"{func}: Expected all tensors to be on the same device, but found at least "
                                     f"two devices, {ACCELERATOR} and cpu (host tensor of shape {seen['host'][0]})")
            if seen["accelerator"] and seen["host_scalar"] and torch.Tag.pointwise not in func.tags:
                raise DeviceMixError(f"{func}: Expected all tensors to be on the same device, but found at least "
                                     f"two devices, {ACCELERATOR} and cpu (a 0-d host tensor)")
            if to_accelerator and seen.get("cpu_generator"):
                raise DeviceMixError(f"{func}: Expected a '{ACCELERATOR.type}' device type for generator but found "
                                     "'cpu'")
        low = self.autocast[-1] if self.autocast else None
        if low is not None and func in _AUTOCAST_LOW and seen["accelerator"]:
            rnd = lambda t: t.to(low).float() if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t  # noqa: E731
            out = tree_map(rnd, func(*tree_map(rnd, a), **k))
        else:
            out = func(*a, **k)
        if func is torch.ops.aten.copy_.default:
            return args[0]
        if on_accelerator:
            self.ops += 1
            return tree_map(lambda t: OnAccelerator(t) if isinstance(t, torch.Tensor) else t, out)
        return out


class _FromData(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` and ``torch.as_tensor`` build their tensor below the dispatcher:
    build it on the host, then move it, so that it becomes an accelerator tensor like any other."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in (torch.tensor, torch.as_tensor) and device is not None \
                and torch.device(device).type == ACCELERATOR.type:
            return func(*args, **{**kwargs, "device": "cpu"}).to(ACCELERATOR)
        return func(*args, **kwargs)


class _Autocast:
    """``torch.autocast("meta", dtype)``: the rounding emulation of the module's docstring."""

    def __init__(self, mode: _Mode, dtype: torch.dtype | None, enabled: bool = True):
        self.mode, self.dtype = mode, (dtype or torch.float16) if enabled else None

    def __enter__(self):
        self.mode.autocast.append(self.dtype)
        return self

    def __exit__(self, *exc):
        self.mode.autocast.pop()
        return False


def _target_is_host(func, args, kwargs) -> bool:
    """Whether a cross-device copy brings accelerator data to the host (``.cpu()``, ``copy_`` into a host tensor)."""
    if func is torch.ops.aten._to_copy.default:
        device = kwargs.get("device")
        return isinstance(args[0], OnAccelerator) and device is not None and torch.device(device).type == "cpu"
    dst, src = args[0], args[1]  # copy_(dst, src)
    return isinstance(src, OnAccelerator) and not isinstance(dst, OnAccelerator)


@contextlib.contextmanager
def fake_accelerator():
    """Run the block with ``meta`` standing in for a GPU (see the module's docstring). Yields the mode,
    whose ``ops`` counts the operations that ran on the accelerator."""
    import torch.optim.optimizer as optim_mod
    import torch.utils._foreach_utils as foreach_utils

    # The fused Adam kernels (the divergence guard's on-device skip) accept accelerator tensors, as on a GPU.
    real = foreach_utils._get_fused_kernels_supported_devices
    fused = lambda: [*real(), ACCELERATOR.type]  # noqa: E731
    saved = [(m, getattr(m, "_get_fused_kernels_supported_devices", None)) for m in (foreach_utils, optim_mod)]
    for m, _ in saved:
        m._get_fused_kernels_supported_devices = fused
    mode = _Mode()
    _ACTIVE.append(mode)
    real_autocast = torch.autocast

    def autocast(device_type, dtype=None, enabled=True, **kw):
        if device_type == ACCELERATOR.type:
            return _Autocast(mode, dtype, enabled)
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)

    torch.autocast = autocast
    try:
        with _FromData(), mode, warnings.catch_warnings():
            # load_state_dict warns that copying into a meta parameter does nothing; here it does copy.
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
            yield mode
    finally:
        torch.autocast = real_autocast
        _ACTIVE.remove(mode)
        for m, f in saved:
            if f is not None:
                m._get_fused_kernels_supported_devices = f
