"""Where images come from: one :class:`Source` per kind of data, each with one way to read image k.

* :class:`ArraySource`: images already in memory as arrays (the built-in faces, IDX files);
* :class:`FolderSource`, :class:`ZipSource`, :class:`LmdbSource`: encoded files (JPEG, PNG, ...).

``source.read(k)`` gives image ``k`` prepared at the source's size and channel count, uint8 (C, S, S);
an unreadable image raises one of ``DECODE_ERRORS``. What to do about that (skip, replace) is the data
set's business (``sets``). Sources are picklable, so loader worker processes can read from them.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, prepare, prepare_arrays
from .index import cached_list

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IDX_TRAIN = "train-images-idx3-ubyte"
IDX_TEST = "t10k-images-idx3-ubyte"


class Source:
    """Images by position, prepared at ``image_size`` with ``in_channels``."""

    name: str

    def __init__(self, name: str, image_size: int, in_channels: int):
        self.name, self.image_size, self.in_channels = name, image_size, in_channels

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def read_many(self, ks) -> np.ndarray:
        """Images ``ks``, (N, C, S, S); any unreadable one raises."""
        return np.stack([self.read(int(k)) for k in ks])

    def label(self, k: int) -> str:
        return str(k)


class ArraySource(Source):
    """Grayscale uint8 images (N, H, W) held as an array; resized in batches (bicubic, antialiased)."""

    def __init__(self, name: str, images: np.ndarray, image_size: int, in_channels: int):
        super().__init__(name, image_size, in_channels)
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, k: int) -> np.ndarray:
        return self.read_many([k])[0]

    def read_many(self, ks) -> np.ndarray:
        return prepare_arrays(self.images[np.asarray(ks, dtype=np.int64)], self.image_size, self.in_channels)


class EncodedSource(Source):
    """Encoded image files; ``raw(k)`` gives the bytes of image ``k``."""

    def raw(self, k: int) -> bytes:
        raise NotImplementedError

    def read(self, k: int) -> np.ndarray:
        data = self.raw(k)
        if not data:
            raise ValueError("empty file")
        return prepare(Image.open(io.BytesIO(data)), self.image_size, self.in_channels)


class FolderSource(EncodedSource):
    def __init__(self, root: Path, names: list[str], image_size: int, in_channels: int):
        super().__init__(root.name, image_size, in_channels)
        self.root, self.names = root, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def raw(self, k: int) -> bytes:
        return (self.root / self.names[k]).read_bytes()

    def label(self, k: int) -> str:
        return self.names[k]


class ZipSource(EncodedSource):
    """The images of a zip file; the file is opened once per process (handles must not cross a fork)."""

    def __init__(self, path: Path, image_size: int, in_channels: int):
        super().__init__(path.name, image_size, in_channels)
        self.path = path
        with zipfile.ZipFile(path) as zf:
            self.names = sorted(n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        self._handle: tuple[int, zipfile.ZipFile] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def raw(self, k: int) -> bytes:
        if self._handle is None or self._handle[0] != os.getpid():
            self._handle = (os.getpid(), zipfile.ZipFile(self.path))
        return self._handle[1].read(self.names[k])

    def label(self, k: int) -> str:
        return self.names[k]

    def __getstate__(self):
        return {**self.__dict__, "_handle": None}


_LMDB_ENVS: dict = {}  # path -> (pid, environment)


class LmdbSource(EncodedSource):
    """An LMDB database whose values are encoded images (the LSUN format: key = image id, value = JPEG or
    WebP bytes). The environment is opened lazily in each process: LMDB handles must not cross a fork."""

    def __init__(self, path: Path, image_size: int, in_channels: int):
        try:
            import lmdb
        except ImportError:
            raise DataError(f"data: {path} is an LMDB database; reading it needs the lmdb package "
                            "(pip install 'introvae[lmdb]')") from None
        super().__init__(path.name, image_size, in_channels)
        self.path, self.lmdb_version = path, lmdb.__version__
        data_file = path / "data.mdb" if path.is_dir() else path
        st = data_file.stat()

        def list_keys() -> list[str]:
            with self._open().begin(write=False) as txn:
                return [k.hex() for k in txn.cursor().iternext(keys=True, values=False)]

        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self.keys = [bytes.fromhex(k) for k in cached_list("lmdb-keys", path, stamp, list_keys)]
        if not self.keys:
            raise DataError(f"data: the LMDB database {path} is empty")

    def _open(self):
        import lmdb

        key = str(self.path.resolve())
        pid, env = _LMDB_ENVS.get(key, (None, None))
        if pid != os.getpid():
            if env is not None:  # inherited through a fork: close our copy, open afresh
                env.close()
            env = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=2048,
                            subdir=self.path.is_dir())
            _LMDB_ENVS[key] = (os.getpid(), env)
        return env

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, k: int) -> bytes:
        with self._open().begin(write=False, buffers=False) as txn:
            data = txn.get(self.keys[k])
        if data is None:
            raise ValueError("key vanished from the database")
        return data

    def label(self, k: int) -> str:
        return self.keys[k].decode("utf-8", "replace")


def is_lmdb(path: Path) -> bool:
    return (path.is_dir() and (path / "data.mdb").is_file()) or (path.is_file() and path.suffix == ".mdb")


def faces(image_size: int, in_channels: int) -> ArraySource:
    """The 100 faces of scikit-image's LFW subset (25x25 grayscale, shipped inside the wheel)."""
    from skimage.data import lfw_subset

    arr = (lfw_subset()[:100] * 255).round().astype(np.uint8)  # the second 100 are non-faces
    return ArraySource("faces", arr, image_size, in_channels)


def idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


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


def fashion_mnist_dir() -> Path:
    root = next((Path(d) for d in FASHION_MNIST_DIRS if idx_file(Path(d), IDX_TRAIN)), None)
    if root is None:
        raise DataError("fashion-mnist: IDX files not found in " + ", ".join(FASHION_MNIST_DIRS)
                        + " (install Debian's dataset-fashion-mnist, or pass the directory holding them)")
    return root
