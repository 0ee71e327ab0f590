"""Image data sets: the built-in faces, Fashion-MNIST IDX files, a folder or a zip of images.

Everything is decoded once, centre-cropped, resized to ``image_size`` and held in memory
as uint8 (N, C, H, W); batches are scaled to [0, 1] floats, the scale the paper's margins
were tuned on. Unreadable images are skipped with a warning and counted, never a crash mid-run.
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IDX_TRAIN = "train-images-idx3-ubyte"
IDX_TEST = "t10k-images-idx3-ubyte"
SPLIT_SEED = 1234  # the held-out split never depends on the training seed
# What a corrupt, truncated or non-image file raises while it is decoded.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError)
# Folders whose decoded images would take more memory than this are decoded on access instead
# (in the loader's workers: --loader-workers), not all at the start.
IN_MEMORY_LIMIT = 8 * 2**30


class DataError(ValueError):
    """The data cannot be used; the message says why and where."""


@dataclass
class ImageSet:
    """Decoded images, uint8 (N, C, H, W), split into train and held-out parts. For data too large to
    hold in memory (LMDB, big folders) ``train`` and ``test`` are :class:`streaming.LazyImages`, which
    decode on access and are indexed the same way."""

    name: str
    train: Tensor  # or streaming.LazyImages
    test: Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise DataError(f"{self.name}: no training images")


def to_float(batch: Tensor) -> Tensor:
    """uint8 images -> float in [0, 1]."""
    return batch.float().div_(255.0)


def to_uint8(images: Tensor) -> Tensor:
    """float images in [0, 1] (values outside are clipped) -> uint8."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def load(data: str, *, image_size: int, in_channels: int, holdout_fraction: float = 0.1,
         show_progress: bool = True) -> ImageSet:
    """Load a data set by name (``faces``, ``fashion-mnist``) or path (folder, zip, IDX directory)."""
    if data == "faces":
        arr = _faces()
        return _split_array("faces", arr, image_size, in_channels, holdout_fraction)
    if data in ("fashion-mnist", "fashion_mnist", "fmnist"):
        root = next((Path(d) for d in FASHION_MNIST_DIRS if _idx_file(Path(d), IDX_TRAIN)), None)
        if root is None:
            raise DataError("fashion-mnist: IDX files not found in " + ", ".join(FASHION_MNIST_DIRS)
                            + " (install Debian's dataset-fashion-mnist, or pass the directory holding them)")
        return load_idx_dir(root, image_size=image_size, in_channels=in_channels)
    p = Path(data).expanduser()
    if not p.exists():
        raise DataError(f"data: no such file or directory: {p} (or name a built-in set: faces, fashion-mnist)")
    if p.is_dir() and _idx_file(p, IDX_TRAIN):
        return load_idx_dir(p, image_size=image_size, in_channels=in_channels)
    from . import streaming

    if streaming.is_lmdb(p):
        return _lazy_set(streaming.LmdbSource(p), image_size, in_channels, holdout_fraction)
    if p.is_dir():
        names = streaming.folder_index(p, IMAGE_EXTENSIONS, show_progress=show_progress)
        if names and len(names) * in_channels * image_size ** 2 > IN_MEMORY_LIMIT:
            return _lazy_set(streaming.FolderSource(p, names), image_size, in_channels, holdout_fraction)
        items = [(name, (p / name).read_bytes) for name in names]
    elif zipfile.is_zipfile(p):
        zf = zipfile.ZipFile(p)
        names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        items = [(n, (lambda n=n: zf.read(n))) for n in names]
    elif p.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError(f"data: {p} is a single image; pass the folder that holds your images")
    else:
        raise DataError(f"data: {p} is neither a folder, a zip of images, nor a directory of IDX files")
    if not items:
        raise DataError(f"data: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {p}")
    images, skipped = _decode_all(items, image_size, in_channels, show_progress, label=p.name)
    if not images:
        raise DataError(f"data: none of the {len(items)} images in {p} could be read "
                        f"(first problem: {skipped[0][0]}: {skipped[0][1]})")
    if skipped:
        warnings.warn(f"{p}: skipped {len(skipped)} unreadable image(s) of {len(items)} "
                      f"(first: {skipped[0][0]}: {skipped[0][1]})", stacklevel=2)
    arr = torch.from_numpy(np.stack(images))
    out = _split_tensor(p.name, arr, holdout_fraction)
    out.skipped = skipped
    return out


def read_image(path: str | Path, *, image_size: int, in_channels: int) -> Tensor:
    """One image file as a float tensor (C, H, W) in [0, 1], prepared like the training data."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    try:
        arr = _prepare(Image.open(p), image_size, in_channels)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {p}: {e}") from None
    return to_float(torch.from_numpy(arr))


def save_image(images: Tensor, path: str | Path) -> None:
    """Write float images in [0, 1], (C, H, W), as a PNG."""
    a = to_uint8(images).permute(1, 2, 0).numpy()
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path)


# --- sources ------------------------------------------------------------------
def _faces() -> np.ndarray:
    """The 100 faces of scikit-image's LFW subset (25x25 grayscale, shipped inside the wheel)."""
    from skimage.data import lfw_subset

    return (lfw_subset()[:100] * 255).round().astype(np.uint8)  # the second 100 are non-faces


def load_idx_dir(root: Path, *, image_size: int, in_channels: int) -> ImageSet:
    """A directory with ``train-images-idx3-ubyte[.gz]`` and optionally ``t10k-images-idx3-ubyte[.gz]``."""
    train = read_idx(_idx_file(root, IDX_TRAIN))
    test_file = _idx_file(root, IDX_TEST)
    test = read_idx(test_file) if test_file else train[:0]
    return ImageSet(root.name, _resize_array(train, image_size, in_channels),
                    _resize_array(test, image_size, in_channels))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of uint8 images (magic 0x00000803) as an array (N, H, W)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 16:
        raise DataError(f"{path}: too short to be an IDX image file")
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    if magic != 0x00000803:
        raise DataError(f"{path}: not an IDX file of uint8 images (magic {magic:#010x}, expected 0x00000803)")
    if len(raw) != 16 + n * h * w:
        raise DataError(f"{path}: truncated or padded ({len(raw) - 16} bytes of pixels, header says {n * h * w})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w).copy()  # writable


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


# --- preprocessing ------------------------------------------------------------------
def _prepare(img: Image.Image, image_size: int, in_channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``image_size``, convert to L or RGB: uint8 (C, H, W)."""
    img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white rather than letting it turn black.
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((a / max(a.max(), 1) * 255).astype(np.uint8))
    img = img.convert("L" if in_channels == 1 else "RGB")
    w, h = img.size
    if min(w, h) < 2:
        raise ValueError(f"image too small ({w}x{h})")
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((image_size, image_size), Image.Resampling.LANCZOS)
    a = np.array(img, dtype=np.uint8)  # a writable copy
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def _decode_all(items, image_size, in_channels, show_progress, label):
    from tqdm.auto import tqdm

    images, skipped = [], []
    for name, read in tqdm(items, desc=f"decoding {label}", unit="img", disable=not show_progress, leave=False):
        try:
            raw = read()
            if not raw:
                raise ValueError("empty file")
            images.append(_prepare(Image.open(io.BytesIO(raw)), image_size, in_channels))
        except DECODE_ERRORS as e:
            skipped.append((name, f"{type(e).__name__}: {e}"))
    return images, skipped


def _resize_array(arr: np.ndarray, image_size: int, in_channels: int) -> Tensor:
    """uint8 (N, H, W) grayscale -> uint8 (N, C, S, S), antialiased, in chunks to bound memory."""
    n, h, w = arr.shape
    s = min(h, w)
    arr = arr[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    out = []
    for i in range(0, n, 8192):
        x = torch.from_numpy(np.ascontiguousarray(arr[i:i + 8192])).float()[:, None]
        if s != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    x = torch.cat(out) if out else torch.zeros(0, 1, image_size, image_size, dtype=torch.uint8)
    return x.expand(-1, in_channels, -1, -1).contiguous()


def _split_array(name, arr, image_size, in_channels, holdout_fraction) -> ImageSet:
    return _split_tensor(name, _resize_array(arr, image_size, in_channels), holdout_fraction)


def _lazy_set(source, image_size: int, in_channels: int, holdout_fraction: float) -> ImageSet:
    """A data set decoded on access, split like the in-memory ones."""
    import functools

    from .streaming import LazyImages

    train, test = _split_indices(len(source), holdout_fraction)
    prepare = functools.partial(_prepare, image_size=image_size, in_channels=in_channels)
    return ImageSet(source.name, LazyImages(source, train.numpy(), prepare), LazyImages(source, test.numpy(), prepare))


def _split_tensor(name: str, x: Tensor, holdout_fraction: float) -> ImageSet:
    train, test = _split_indices(len(x), holdout_fraction)
    return ImageSet(name, x[train], x[test])


def _split_indices(n: int, holdout_fraction: float) -> tuple[Tensor, Tensor]:
    """Deterministic held-out split of ``n`` images: a fixed permutation (independent of the run's seed),
    the same for in-memory and streamed data. Returns (train indices, held-out indices)."""
    n_test = int(round(n * holdout_fraction)) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[n_test:], perm[:n_test]


def epoch_plan(num_images: int, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
               world_size: int = 1) -> list[tuple[int, Tensor]]:
    """(images of the epoch used after the step, this process's indices) for each step of one epoch.

    The order depends only on (seed, epoch), so a resumed run sees exactly the batches an
    uninterrupted one would; ``start`` counts the images of the epoch already used. With several
    processes each step takes a global batch of ``world_size * batch_size`` images and process
    ``rank`` gets its consecutive slice, so the global batches are the same whatever the split
    (and a run can be resumed with another number of processes).
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_images, generator=g)
    step = batch_size * world_size
    return [(i + step, perm[i + rank * batch_size:i + (rank + 1) * batch_size])
            for i in range(start, num_images - step + 1, step)]


def batches(train, batch_size: int, *, seed: int, epoch: int, start: int = 0, rank: int = 0,
            world_size: int = 1, workers: int = 0, pin_memory: bool = False):
    """Yield (images of the epoch used so far, float batch) for the steps of one epoch (see
    :func:`epoch_plan`). With ``workers`` > 0 the batches are gathered (and, for streamed data, decoded)
    in that many worker processes, ahead of the training step, into pinned memory if asked."""
    plan = _PlannedBatches(train, epoch_plan(len(train), batch_size, seed=seed, epoch=epoch, start=start,
                                             rank=rank, world_size=world_size))
    if workers == 0:
        yield from (plan[k] for k in range(len(plan)))
    else:
        yield from torch.utils.data.DataLoader(plan, batch_size=None, shuffle=False, num_workers=workers,
                                               pin_memory=pin_memory, prefetch_factor=4)


class _PlannedBatches(torch.utils.data.Dataset):
    """The batches of an epoch plan, for a DataLoader (each item is a whole batch)."""

    def __init__(self, images, plan):
        self.images, self.plan = images, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int):
        used, idx = self.plan[k]
        return used, to_float(self.images[idx])
