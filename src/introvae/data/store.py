"""Reading a store written by ``introvae prepare`` (see :mod:`.prepared`): ``train.npy`` and ``test.npy`` mapped
from disk, checked against the run that uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import decoded, sources
from .imageset import ImageSet

FORMAT = 1
KIND = "introvae-prepared-images"


def is_store(path: Path) -> bool:
    index = Path(path) / "index.json"
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("kind") == KIND
    except ValueError:
        return False


def read_store(path: Path, *, image_size: int, in_channels: int, holdout_fraction: float):
    """The :class:`ImageSet` of a store, mapped from disk; one line for a store that does not fit the run."""
    path = Path(path)
    index = json.loads((path / "index.json").read_text())
    if index.get("format") != FORMAT:
        raise DataError(f"data: {path} is a store of format {index.get('format')}; this version reads format "
                        f"{FORMAT}: run introvae prepare again")
    for name, want in (("image_size", image_size), ("in_channels", in_channels)):
        if index[name] != want:
            raise DataError(f"data: {path} was prepared with {name} {index[name]}, this run needs {want}: prepare "
                            f"it again with --{name.replace('_', '-')} {want}")
    if not index.get("official_test") and index["holdout_fraction"] != holdout_fraction:
        raise DataError(f"data: {path} was split with holdout_fraction {index['holdout_fraction']}, this run asks "
                        f"for {holdout_fraction}")
    src_path = Path(index["source"])
    if index["fingerprint"] is not None and src_path.exists():
        src = sources.FolderSource(src_path, _listing(src_path), image_size, in_channels) if src_path.is_dir() \
            else sources.ZipSource(src_path, image_size, in_channels)
        if decoded.fingerprint(src) != index["fingerprint"]:
            raise DataError(f"data: the source {src_path} changed since {path} was prepared; run introvae prepare "
                            f"{src_path} again (into a new OUT), or train from the source itself")
    train, test = (torch.from_numpy(np.load(path / f"{p}.npy", mmap_mode="c")) for p in ("train", "test"))
    return ImageSet(path.name, train, test, [tuple(s) for s in index["skipped"]],
                    official_test=index.get("official_test", False))


def _listing(root: Path) -> list[str]:
    from .images import IMAGE_EXTENSIONS
    from .index import folder_index

    return folder_index(root, IMAGE_EXTENSIONS)
