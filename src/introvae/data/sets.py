"""Data sets: a source split into training and held-out images, decoded on access or cached in memory.

:class:`LazyImages` is the one way images are read: a view of a source by index, decoded when
indexed. A data set that fits in memory is that same view decoded once into a uint8 tensor
(N, C, H, W) (:func:`cache_in_memory`), which indexes the same way; there unreadable images are
left out and listed. Larger ones (LMDB, big folders) stay lazy and are decoded in the loader's
worker processes, an unreadable image replaced by its next readable neighbour.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, DataWarning
from . import decoded, sources, store
from .imageset import HOLDOUT_FRACTION, ImageSet
from .images import DECODE_ERRORS, IMAGE_EXTENSIONS
from .index import folder_index

SPLIT_SEED = 1234  # the held-out split never depends on the training seed
# Data sets whose decoded images would take more memory than this are decoded on access instead.
IN_MEMORY_LIMIT = 8 * 2**30


class LazyImages:
    """Images of a source selected by ``indices``, decoded when indexed (by int, slice or index tensor)."""

    def __init__(self, source: sources.Source, indices):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx) -> Tensor:
        if isinstance(idx, (int, np.integer)):
            return torch.from_numpy(self._read(int(self.indices[idx])))
        chosen = self.indices[idx.cpu().numpy() if isinstance(idx, Tensor) else idx]
        if len(chosen) == 0:
            raise IndexError("empty selection of a lazily decoded data set")
        try:
            return torch.from_numpy(self.source.read_many(chosen))
        except DECODE_ERRORS:  # one of them is unreadable: read them one by one
            return torch.from_numpy(np.stack([self._read(int(k)) for k in chosen]))

    def _read(self, k: int) -> np.ndarray:
        """Image ``k``; an unreadable one is replaced by the next readable image (and reported once)."""
        n = len(self.source)
        for attempt in range(min(n, 64)):
            key = (k + attempt) % n
            try:
                return self.source.read(key)
            except DECODE_ERRORS as e:
                if key not in self._reported:
                    self._reported.add(key)
                    warnings.warn(f"{self.source.name}: skipping unreadable image {self.source.label(key)} "
                                  f"({type(e).__name__}: {e}); a neighbouring image is used instead", DataWarning,
                                  stacklevel=2)
        raise DataError(f"{self.source.name}: 64 consecutive images could not be read (from "
                        f"{self.source.label(k)}); is this an image data set?")


def cache_in_memory(images: LazyImages, *, show_progress: bool = False,
                    chunk: int = 8192) -> tuple[Tensor, list[tuple[str, str]]]:
    """Every image of ``images`` decoded into one uint8 tensor; unreadable ones are left out and returned
    as (file, reason)."""
    from ..progress import progress

    src, kept, skipped = images.source, [], []
    with progress(total=len(images), desc=f"decoding {src.name}", unit="img", disable=not show_progress,
                  leave=False) as bar, _large_images_counted(src.name):
        for start in range(0, len(images), chunk):
            ks = images.indices[start:start + chunk]
            try:
                kept.append(src.read_many(ks))
            except DECODE_ERRORS:
                for k in ks:
                    try:
                        kept.append(src.read(int(k))[None])
                    except DECODE_ERRORS as e:
                        skipped.append((src.label(int(k)), f"{type(e).__name__}: {e}"))
            bar.update(len(ks))
    c, s = src.in_channels, src.image_size
    arr = np.concatenate(kept) if kept else np.zeros((0, c, s, s), np.uint8)
    return torch.from_numpy(arr), skipped


@contextlib.contextmanager
def _large_images_counted(name: str):
    """PIL's DecompressionBombWarning (one per image over its pixel limit) as one line for the whole decode."""
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        yield
    large = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    for w in caught:  # everything else as it would have been shown
        if w not in large:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if large:
        limit = Image.MAX_IMAGE_PIXELS or 0
        warnings.warn(f"{name}: {len(large)} image(s) larger than {limit:,} pixels were decoded (PIL's limit; it "
                      f"refuses those over twice that; --max-image-pixels N moves it)", DataWarning, stacklevel=3)


def load(data: str, *, image_size: int, in_channels: int, holdout_fraction: float = HOLDOUT_FRACTION,
         show_progress: bool = True, lazy: bool = False) -> ImageSet:
    """A data set by name (``faces``, ``fashion-mnist``) or path (folder, zip, LMDB, IDX directory, or a store
    written by ``introvae prepare``).

    A folder or zip small enough for memory is decoded once and kept on disk (:mod:`.decoded`); later calls
    map it. ``lazy``: where no decoded copy exists yet, decode nothing now, only the images used (evaluate)."""
    if store.is_store(Path(data).expanduser()):
        return store.read_store(Path(data).expanduser(), image_size=image_size, in_channels=in_channels,
                                holdout_fraction=holdout_fraction)
    opened = open_source(data, image_size=image_size, in_channels=in_channels, show_progress=show_progress)
    if isinstance(opened, ImageSet):
        return opened
    if isinstance(opened, sources.ArraySource):
        return _split(opened, holdout_fraction, show_progress)
    return _split(opened, holdout_fraction, show_progress, lazy=lazy)


def open_source(data: str, *, image_size: int, in_channels: int, show_progress: bool = True):
    """The :class:`ImageSet` of a data set that is arrays with its own split (IDX files), else the
    :class:`~.sources.Source` to split and decode (the faces, a folder, a zip, an LMDB database)."""
    if data == "faces":
        return sources.faces(image_size, in_channels)
    if data in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return _idx_set(sources.fashion_mnist_dir(), image_size, in_channels)
    p = Path(data).expanduser()
    if not p.exists():
        from ..toy2d.densities import DENSITIES

        if data in DENSITIES:  # a name train takes, but no images: said so, with where it does work
            raise DataError(f"data: {data} is a 2D density, not images: `introvae train --data {data} --objective "
                            f"O` trains on it, and experiments/objectives.py compares the three objectives there")
        raise DataError(f"data: no such file or directory: {p} (or name a built-in set: faces, fashion-mnist)")
    if p.is_dir() and sources.idx_file(p, sources.IDX_TRAIN):
        return _idx_set(p, image_size, in_channels)
    if sources.is_lmdb(p):
        src = sources.LmdbSource(p, image_size, in_channels)
    elif p.is_dir():
        src = sources.FolderSource(p, folder_index(p, IMAGE_EXTENSIONS, show_progress=show_progress), image_size,
                                   in_channels)
    elif zipfile.is_zipfile(p):
        src = sources.ZipSource(p, image_size, in_channels)
    elif p.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError(f"data: {p} is a single image; pass the folder that holds your images")
    else:
        raise DataError(f"data: {p} is neither a folder, a zip of images, nor a directory of IDX files")
    if len(src) == 0:
        raise DataError(f"data: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {p}")
    return src


def split_indices(n: int, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of a source of ``n`` images: a fixed permutation (``SPLIT_SEED``, not the
    run's seed), the first ``round(n * holdout_fraction)`` held out. ``prepare`` splits the same way."""
    n_test = int(round(n * holdout_fraction)) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    return perm[n_test:], perm[:n_test]


def _split(src: sources.Source, holdout_fraction: float, show_progress: bool, *, lazy: bool = False) -> ImageSet:
    """A fixed held-out split (independent of the run's seed), the same whether cached or streamed."""
    n = len(src)
    train_idx, test_idx = split_indices(n, holdout_fraction)
    train, test = LazyImages(src, train_idx), LazyImages(src, test_idx)
    size = n * src.in_channels * src.image_size ** 2
    if size > IN_MEMORY_LIMIT or isinstance(src, sources.LmdbSource):
        if show_progress:  # nothing this large is written silently: say how to decode it once
            print(f"introvae: {src.name}: {n} images of {src.image_size} px are {size / 2**30:.1f} GiB decoded, "
                  f"decoded batch by batch (not cached); `introvae prepare {_where(src)} STORE --image-size "
                  f"{src.image_size} --in-channels {src.in_channels}` decodes them once into STORE for --data",
                  file=sys.stderr)
        return ImageSet(src.name, train, test)
    store = decoded.store_dir(src, holdout_fraction=holdout_fraction, split_seed=SPLIT_SEED)
    kept = decoded.read(store) if store is not None else None
    if kept is None and lazy:
        return ImageSet(src.name, train, test)
    if kept is None:
        say = (lambda line: print(f"introvae: {src.name}: {line}", file=sys.stderr)) if show_progress else None
        with decoded.exclusive(store, say=say) if store is not None else contextlib.nullcontext():
            kept = decoded.read(store) if store is not None else None  # written while this process waited
            if kept is None:
                (train, bad_train), (test, bad_test) = (cache_in_memory(part, show_progress=show_progress)
                                                        for part in (train, test))
                skipped = sorted(bad_train + bad_test)
                if store is not None and len(train) and decoded.write(store, train, test, skipped,
                                                                      source=src.name) and show_progress:
                    print(f"introvae: {src.name}: decoded {len(train) + len(test)} images once; cached in {store} "
                          f"(reused while the source is unchanged)", file=sys.stderr)
    if kept is not None:
        train, test, skipped = kept
        if show_progress:
            print(f"introvae: {src.name}: using its decoded images cached in {store}", file=sys.stderr)
    if skipped and len(train) + len(test) == 0:
        raise DataError(f"data: none of the {n} images in {src.name} could be read "
                        f"(first problem: {skipped[0][0]}: {skipped[0][1]})")
    if skipped:
        warnings.warn(f"{src.name}: skipped {len(skipped)} unreadable image(s) of {n} (first: {skipped[0][0]}: "
                      f"{skipped[0][1]}; a training run lists them all in its bad_images.txt)", DataWarning,
                      stacklevel=3)
    return ImageSet(src.name, train, test, skipped)


def _where(src: sources.Source) -> str:
    """The path a source was opened from, for a command line."""
    return str(getattr(src, "root", None) or getattr(src, "path", None) or src.name)


def _idx_set(root: Path, image_size: int, in_channels: int) -> ImageSet:
    """A directory of IDX files: ``train-images-idx3-ubyte[.gz]``, and its own held-out ``t10k`` file if any."""
    train = sources.ArraySource(root.name, sources.read_idx(sources.idx_file(root, sources.IDX_TRAIN)),
                                image_size, in_channels)
    test_file = sources.idx_file(root, sources.IDX_TEST)
    test = sources.ArraySource(root.name, sources.read_idx(test_file) if test_file else train.images[:0],
                               image_size, in_channels)
    return ImageSet(root.name, cache_in_memory(LazyImages(train, np.arange(len(train))))[0],
                    cache_in_memory(LazyImages(test, np.arange(len(test))))[0], official_test=test_file is not None)
