"""One image, prepared the way the networks see it: centre-cropped, resized, uint8 (C, H, W).

Batches are scaled to [0, 1] floats, the scale the paper's margins were tuned on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# What a corrupt, truncated or non-image file raises while it is decoded.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError)


def to_float(batch: Tensor) -> Tensor:
    """uint8 images -> float in [0, 1] (on the batch's device)."""
    return batch.float().div_(255.0)


def to_uint8(images: Tensor) -> Tensor:
    """float images in [0, 1] (values outside are clipped) -> uint8, on the images' device."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def prepare(img: Image.Image, image_size: int, in_channels: int) -> np.ndarray:
    """A decoded image centre-cropped to a square, resized to ``image_size`` (Lanczos), as L or RGB: uint8 (C, H, W)."""
    img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white rather than letting it turn black.
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((a / max(a.max(), 1) * 255).astype(np.uint8))
    img = img.convert("L" if in_channels == 1 else "RGB")
    w, h = img.size
    if min(w, h) < 2:
        raise ValueError(f"image too small ({w}x{h})")
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    with warnings.catch_warnings():  # PIL checks the size again when cropping: one warning per image (open's)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = img.crop((left, top, left + s, top + s)).resize((image_size, image_size), Image.Resampling.LANCZOS)
    a = np.array(img, dtype=np.uint8)  # a writable copy
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def prepare_arrays(arr: np.ndarray, image_size: int, in_channels: int) -> np.ndarray:
    """Grayscale uint8 images (N, H, W) centre-cropped and resized (bicubic, antialiased): uint8 (N, C, S, S)."""
    n, h, w = arr.shape
    s = min(h, w)
    x = torch.from_numpy(np.ascontiguousarray(arr[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]))
    x = x.float()[:, None]
    if s != image_size and n:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, in_channels, -1, -1).contiguous().numpy()


def read_image(path: str | Path, *, image_size: int, in_channels: int) -> Tensor:
    """One image file as a float tensor (C, H, W) in [0, 1], prepared like the training data."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    try:
        arr = prepare(Image.open(p), image_size, in_channels)
    except DECODE_ERRORS as e:
        raise DataError(f"cannot read image {p}: {e}") from None
    return to_float(torch.from_numpy(arr))


def save_image(images: Tensor, path: str | Path) -> None:
    """Write float images in [0, 1], (C, H, W), as a PNG."""
    a = to_uint8(images).cpu().permute(1, 2, 0).numpy()
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path)
