"""Listings worth keeping: the sorted files of a folder, the keys of an LMDB database.

Listing a folder of millions of files takes minutes, so the list is cached under
``cache_root()/folder-index`` and reused while the folder and its first-level subfolders keep their
modification times (adding or removing a file in them changes those).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..cache import cache_root


def folder_index(root: Path, extensions: Sequence[str], *, show_progress: bool = False) -> list[str]:
    """The sorted image files under ``root`` (relative paths), from the cache when the folder is unchanged."""
    root = root.resolve()

    def stamp() -> dict:
        subdirs = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(root) if e.is_dir())
        return {"mtime_ns": root.stat().st_mtime_ns, "subdirs": subdirs, "ext": sorted(extensions)}

    def walk() -> list[str]:
        from ..progress import progress

        found = []
        # leave=True: the last line says how many files were seen (a bar cleared at the end read "0 files")
        with progress(desc=f"indexing {root.name}", unit=" files", disable=not show_progress, leave=True) as bar:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel = os.path.relpath(dirpath, root)
                for f in filenames:
                    if os.path.splitext(f)[1].lower() in extensions:
                        found.append(f if rel == "." else os.path.join(rel, f))
                bar.update(len(filenames))
        return sorted(found)

    return cached_list("folder-index", root, stamp(), walk)


def cached_list(kind: str, path: Path, stamp: dict, compute: Callable[[], list[str]]) -> list[str]:
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
