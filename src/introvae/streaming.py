"""Data too large to decode up front: LMDB databases (LSUN) and large folders, decoded on access.

A :class:`LazyImages` behaves like the uint8 tensor (N, C, H, W) of an in-memory data set where the
trainer and the metrics use it (``len``, indexing by int, slice or index tensor), but decodes each
image when it is read, in the loader's worker processes when ``loader_workers`` > 0.

Listing a folder of millions of files takes minutes, so the sorted file list is cached under
``cache_root()/folder-index`` and reused while the folder and its first-level subfolders keep their
modification times (adding or removing a file in them changes those). Keys of an LMDB database are
cached the same way, keyed by the database file's size and modification time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .cache import cache_root
from .data import DECODE_ERRORS, DataError


class LazyImages:
    """Images of a :class:`Source`, selected by ``indices``, prepared like in-memory data on access."""

    def __init__(self, source: "Source", indices: np.ndarray, prepare: Callable[[Image.Image], np.ndarray]):
        self.source, self.indices, self.prepare = source, np.asarray(indices, dtype=np.int64), prepare
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx) -> Tensor:
        if isinstance(idx, (int, np.integer)):
            return torch.from_numpy(self._decode(int(self.indices[idx])))
        if isinstance(idx, Tensor):
            idx = idx.cpu().numpy()
        chosen = self.indices[idx]
        if len(chosen) == 0:
            raise IndexError("empty selection of a lazily decoded data set")
        return torch.from_numpy(np.stack([self._decode(int(k)) for k in chosen]))

    def subset(self, idx) -> "LazyImages":
        return LazyImages(self.source, self.indices[idx], self.prepare)

    def _decode(self, k: int) -> np.ndarray:
        """Image ``k``; an unreadable one is replaced by the next readable image (and reported once)."""
        n = len(self.source)
        for attempt in range(min(n, 64)):
            key = (k + attempt) % n
            try:
                raw = self.source.read(key)
                if not raw:
                    raise ValueError("empty file")
                return self.prepare(Image.open(io.BytesIO(raw)))
            except DECODE_ERRORS as e:
                if key not in self._reported:
                    self._reported.add(key)
                    warnings.warn(f"{self.source.name}: skipping unreadable image {self.source.label(key)} "
                                  f"({type(e).__name__}: {e}); a neighbouring image is used instead", stacklevel=2)
        raise ValueError(f"{self.source.name}: 64 consecutive images could not be read (from "
                         f"{self.source.label(k)}); is this an image data set?")


class Source:
    """Encoded images by position: ``read(k)`` gives the bytes of image ``k``."""

    name: str

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, k: int) -> bytes:
        raise NotImplementedError

    def label(self, k: int) -> str:
        return str(k)


_LMDB_ENVS: dict = {}  # path -> (pid, environment)


class FolderSource(Source):
    def __init__(self, root: Path, names: Sequence[str]):
        self.root, self.names, self.name = root, list(names), root.name

    def __len__(self) -> int:
        return len(self.names)

    def read(self, k: int) -> bytes:
        return (self.root / self.names[k]).read_bytes()

    def label(self, k: int) -> str:
        return self.names[k]


class LmdbSource(Source):
    """An LMDB database whose values are encoded images (the LSUN format: key = image id, value = JPEG or
    WebP bytes). The environment is opened lazily in each process: LMDB handles must not cross a fork."""

    def __init__(self, path: Path):
        try:
            import lmdb
        except ImportError:
            raise DataError(f"data: {path} is an LMDB database; reading it needs the lmdb package "
                            "(pip install 'introvae[lmdb]')") from None
        self.path, self.name, self.lmdb_version = path, path.name, lmdb.__version__
        self.keys = self._cached_keys()
        if not self.keys:
            raise DataError(f"data: the LMDB database {path} is empty")

    def _open(self):
        """This process's handle of the database (one per path and process, as LMDB requires)."""
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

    def _cached_keys(self) -> list[bytes]:
        data_file = self.path / "data.mdb" if self.path.is_dir() else self.path
        st = data_file.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

        def list_keys() -> list[str]:
            with self._open().begin(write=False) as txn:
                return [k.hex() for k in txn.cursor().iternext(keys=True, values=False)]

        return [bytes.fromhex(k) for k in _cached_list("lmdb-keys", self.path, stamp, list_keys)]

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, k: int) -> bytes:
        with self._open().begin(write=False, buffers=False) as txn:
            raw = txn.get(self.keys[k])
        if raw is None:
            raise ValueError("key vanished from the database")
        return raw

    def label(self, k: int) -> str:
        return self.keys[k].decode("utf-8", "replace")



def is_lmdb(path: Path) -> bool:
    return (path.is_dir() and (path / "data.mdb").is_file()) or (path.is_file() and path.suffix == ".mdb")


def folder_index(root: Path, extensions: Sequence[str], *, show_progress: bool = False) -> list[str]:
    """The sorted image files under ``root`` (relative paths), from the cache when the folder is unchanged."""
    root = root.resolve()

    def stamp() -> dict:
        subdirs = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(root) if e.is_dir())
        return {"mtime_ns": root.stat().st_mtime_ns, "subdirs": subdirs, "ext": sorted(extensions)}

    def walk() -> list[str]:
        from tqdm.auto import tqdm

        found = []
        with tqdm(desc=f"indexing {root.name}", unit=" files", disable=not show_progress, leave=False) as bar:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel = os.path.relpath(dirpath, root)
                for f in filenames:
                    if os.path.splitext(f)[1].lower() in extensions:
                        found.append(f if rel == "." else os.path.join(rel, f))
                bar.update(len(filenames))
        return sorted(found)

    return _cached_list("folder-index", root, stamp(), walk)


def _cached_list(kind: str, path: Path, stamp: dict, compute: Callable[[], list[str]]) -> list[str]:
    """``compute()``, cached on disk for ``path`` while ``stamp`` is unchanged (one JSON file)."""
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    cache = cache_root() / kind / f"{key}.json"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("path") == str(path.resolve()) and saved.get("stamp") == json.loads(json.dumps(stamp)):
            return saved["items"]
    except (OSError, ValueError, KeyError):
        pass
    items = compute()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"path": str(path.resolve()), "stamp": stamp, "items": items}))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs the listing next time
    return items
