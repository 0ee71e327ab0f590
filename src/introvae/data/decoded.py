"""Decoded folders and zips kept on disk, so that a second command does not decode them again.

Decoding a folder of a few thousand PNGs takes minutes on a small CPU, and `train`, `train --resume`,
`evaluate` and `serve` each need the same images. The first command that decodes a source writes the
result (the training and held-out images as uint8 arrays, and the files it skipped) under
``cache_root()/decoded/KEY/``; later ones map those arrays from disk. KEY covers everything the arrays
depend on: the source's path and listing (each file's name, size and modification time, so that an added,
removed or rewritten image rebuilds it), the image size, channels, held-out fraction and split seed.
A store is written under a temporary name and renamed when complete, so a killed write leaves nothing
that looks usable. Processes that need the same store at once (the processes of a ``torchrun`` job, or two
commands) take turns through a lock file beside it: one decodes and writes, the others wait and map its arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_root
from ..cache import exclusive as cache_exclusive

FORMAT = 1


def fingerprint(src) -> dict | None:
    """What identifies a source's content, cheaply (stat only); None for sources not worth caching."""
    from .sources import FolderSource, ZipSource

    if isinstance(src, FolderSource):
        h = hashlib.sha256()
        for name in src.names:
            try:
                st = os.stat(src.root / name)
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{name}\0missing\n".encode())
        return {"kind": "folder", "path": str(Path(src.root).resolve()), "files": len(src.names),
                "listing": h.hexdigest()}
    if isinstance(src, ZipSource):
        st = os.stat(src.path)
        return {"kind": "zip", "path": str(Path(src.path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return None


def store_dir(src, *, holdout_fraction: float, split_seed: int) -> Path | None:
    fp = fingerprint(src)
    if fp is None:
        return None
    key = dict(fp, image_size=src.image_size, in_channels=src.in_channels, holdout_fraction=holdout_fraction,
               split_seed=split_seed, format=FORMAT)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "decoded" / digest


def exclusive(path: Path, *, say=None):
    """Hold the lock of store ``path`` (``say`` gets one line if another process holds it: it is waited for)."""
    return cache_exclusive(f"decoded-{path.name}", say=say,
                           waiting=f"waiting for another process that is decoding these images into {path}")


def read(path: Path):
    """(train, test, skipped) from a complete store, the arrays mapped from disk; None if there is none."""
    try:
        index = json.loads((path / "index.json").read_text())
        if index.get("format") != FORMAT:
            return None
        # copy-on-write maps: pages are read when touched, and the tensors are writable like decoded ones
        train, test = (torch.from_numpy(np.load(path / f"{part}.npy", mmap_mode="c")) for part in ("train", "test"))
    except (OSError, ValueError, KeyError):
        return None
    return train, test, [tuple(s) for s in index["skipped"]]


def write(path: Path, train: torch.Tensor, test: torch.Tensor, skipped: list, *, source: str) -> Path | None:
    """Store the decoded split at ``path`` (atomically); None if the cache cannot be written (not an error)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for part, t in (("train", train), ("test", test)):
            np.save(tmp / f"{part}.npy", t.numpy())
        (tmp / "index.json").write_text(json.dumps({"format": FORMAT, "source": source, "train": len(train),
                                                    "test": len(test), "skipped": skipped}))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"introvae: note: decoded images not cached ({e}); the next command will decode them again",
              file=sys.stderr)
        return None
