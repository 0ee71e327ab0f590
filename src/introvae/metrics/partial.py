"""Features computed so far, kept on disk, so that an interrupted evaluation resumes where it stopped.

The generated images' Inception features are nearly all of an evaluation's time (10,000 images at 32 px: half an
hour on one CPU core; 50,000 at 1024 px: hours on a GPU). While they are computed they are written every
``KEEP_EVERY_S`` seconds, and once more when the work is interrupted (Ctrl-C, an error), to a file named by a
digest of everything they depend on: every byte of the images, the batch they go through the network in, the
network's arithmetic and the device type. The same command makes the same images, finds the file and computes only
the rest, batch by batch as an uninterrupted run would (so the features are the same to the bit on a CPU). Other
images or settings have another digest, so a file is never used for images it was not computed from.

Complete features that took longer than ``KEEP_EVERY_S`` to compute stay on disk until the evaluation is recorded
(:meth:`.context.MetricContext.finish`): a stop during the real images' features or the other metrics then loses
none of them. The real images' features are kept the same way while computed (in the cache directory, named by
their cache key), so a 10,000-image reference interrupted half way resumes there too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

KEEP_EVERY_S = 60.0
HASH_BYTES = 2**26  # images read at a time while hashing (a file-backed array is never read whole)


def digest(images: Tensor, **about) -> str:
    """SHA-256 of uint8 ``images`` (N, C, H, W; in memory or mapped from a file) and of ``about`` (JSON-able)."""
    h = hashlib.sha256(json.dumps(about, sort_keys=True).encode())
    h.update(f"{tuple(images.shape)} {images.dtype}".encode())
    step = max(1, HASH_BYTES // max(1, images[0].numel()))
    for k in range(0, len(images), step):
        h.update(images[k:k + step].contiguous().numpy())
    return h.hexdigest()


class PartialFeatures:
    """The features of the first rows of ``total`` images whose :func:`digest` is ``key``, in ``folder``."""

    def __init__(self, folder: Path, key: str, total: int, *, name: str = "sample-features"):
        self.path = Path(folder) / f"{name}-partial-{key[:16]}.pt"
        self.key, self.total = key, total

    def load(self) -> Tensor | None:
        """The features kept for these images (the first rows, or all of them), or None (no file, another key, or a
        file that cannot be read)."""
        if not self.path.is_file():
            return None
        try:
            kept = torch.load(self.path, weights_only=True)
        except Exception:  # noqa: BLE001 - unreadable: computing again loses only time
            return None
        if not isinstance(kept, dict) or kept.get("key") != self.key:
            return None
        features = kept.get("features")
        if not isinstance(features, Tensor) or features.dim() != 2 or not 0 < len(features) <= self.total:
            return None
        return features

    def keep(self, features: Tensor) -> None:
        """Write the features of the first ``len(features)`` images, atomically (a kill leaves the old file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        torch.save({"key": self.key, "total": self.total, "features": features.float()}, tmp)
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def kept_in(folder: Path) -> list[tuple[str, int, int]]:
    """(file name, images done, images in all) of each partial features file in ``folder``: an evaluation stopped
    there, which the same command resumes. Files that cannot be read are left out."""
    out = []
    for path in sorted(Path(folder).glob("*-partial-*.pt")):
        try:
            kept = torch.load(path, weights_only=True, mmap=True)
            out.append((path.name, len(kept["features"]), int(kept["total"])))
        except Exception:  # noqa: BLE001 - a file being replaced, or cut short: it says nothing sure
            continue
    return out
