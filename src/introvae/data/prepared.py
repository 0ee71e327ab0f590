"""``introvae prepare``: any source decoded once, over all cores, into a store that every later command maps.

A store is a directory with ``train.npy`` and ``test.npy`` (uint8, (N, C, H, W), memory-mapped when read:
the processes of a ``torchrun`` job share the pages instead of each decoding its own copy) and
``index.json``: the source, image size and channels, held-out fraction and split seed, each kept image's
original name, the skipped files with their reasons, a fingerprint of the source listing and a format
version. ``.npy`` because numpy maps it with no extra dependency and any tool reads it.

The split is the one ``--data SOURCE`` makes (the same held-out images, the same order), so a run trained
from the store sees exactly the batches it would have seen from the source. A store is written as
``OUT.partial`` and renamed when complete: an interrupted ``prepare`` leaves nothing that trains, and the
next one starts over (it says so).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DataError, UserError
from . import decoded, sources
from .imageset import HOLDOUT_FRACTION
from .images import DECODE_ERRORS

from .store import FORMAT, KIND, is_store

CHUNK = 256


def _decode_chunk(src, ks):
    """Images ``ks`` of ``src``: (array of the readable ones, their positions in ks, [(label, reason)])."""
    kept, where, skipped = [], [], []
    for j, k in enumerate(ks):
        try:
            kept.append(src.read(int(k)))
            where.append(j)
        except DECODE_ERRORS as e:
            skipped.append((src.label(int(k)), f"{type(e).__name__}: {e}"))
    c, s = src.in_channels, src.image_size
    return (np.stack(kept) if kept else np.zeros((0, c, s, s), np.uint8)), where, skipped


def _write_part(path: Path, src, indices: np.ndarray, *, workers: int, bar) -> tuple[int, list, list]:
    """Decode ``indices`` of ``src`` into ``path`` (.npy, compacted: unreadable images left out)."""
    c, s = src.in_channels, src.image_size
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(indices), c, s, s))
    chunks = [indices[k:k + CHUNK] for k in range(0, len(indices), CHUNK)]
    n, names, skipped = 0, [], []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 0 else None
    try:
        results = pool.map(_decode_chunk, [src] * len(chunks), chunks) if pool else map(
            lambda ks: _decode_chunk(src, ks), chunks)
        for ks, (arr, where, bad) in zip(chunks, results):
            out[n:n + len(arr)] = arr
            names += [src.label(int(ks[j])) for j in where]
            skipped += bad
            n += len(arr)
            bar.update(len(ks))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    out.flush()
    del out
    if n < len(indices):  # rewrite with the true length (rare: only when some images were unreadable)
        full = np.load(path, mmap_mode="r")[:n].copy()
        np.save(path, full)
    return n, names, skipped


def prepare(source: str, out: str | Path, *, image_size: int, in_channels: int,
            holdout_fraction: float = HOLDOUT_FRACTION, workers: int | None = None, show_progress: bool = True,
            say=print) -> Path:
    """Decode ``source`` (anything ``--data`` takes) into a store at ``out``; returns ``out``."""
    from ..progress import progress
    from .sets import SPLIT_SEED, open_source, split_indices

    out = Path(out)
    workers = (os.cpu_count() or 1) if workers is None else workers
    settings = {"image_size": image_size, "in_channels": in_channels, "holdout_fraction": holdout_fraction,
                "split_seed": SPLIT_SEED}
    opened = open_source(source, image_size=image_size, in_channels=in_channels, show_progress=show_progress)
    fp = decoded.fingerprint(opened) if isinstance(opened, sources.Source) else None
    if is_store(out):
        index = json.loads((out / "index.json").read_text())
        if index.get("format") == FORMAT and all(index.get(k) == v for k, v in settings.items()) and \
                index.get("fingerprint") == fp and index.get("source") == str(source):
            say(f"{out} is already a complete store of {source} at these settings; nothing to do")
            return out
        raise UserError(f"prepare: {out} already holds a store made from other data or settings; remove it or "
                        f"choose another OUT")
    if out.exists() and not is_store(out):
        raise UserError(f"prepare: {out} exists and is not a store; choose another OUT")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        say(f"an interrupted prepare left {partial}; starting over")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        if isinstance(opened, sources.Source):
            n = len(opened)
            train_idx, test_idx = split_indices(n, holdout_fraction)
            with progress(total=n, desc=f"preparing {opened.name} ({workers} workers)", unit="img",
                          disable=not show_progress) as bar:
                n_train, train_names, bad_train = _write_part(partial / "train.npy", opened, train_idx,
                                                              workers=workers, bar=bar)
                n_held, test_names, bad_test = _write_part(partial / "test.npy", opened, test_idx,
                                                           workers=workers, bar=bar)
            skipped, official = sorted(bad_train + bad_test), False
            if n_train == 0:
                raise DataError(f"prepare: none of the {n} images in {source} could be read")
        else:  # data sets that are arrays already (faces, IDX files): their own split
            np.save(partial / "train.npy", opened.train.numpy())
            np.save(partial / "test.npy", opened.test.numpy())
            n_train, n_held, skipped, official = len(opened.train), len(opened.test), [], opened.official_test
            train_names = test_names = None
        index = {"kind": KIND, "format": FORMAT, "source": str(source), "fingerprint": fp, **settings,
                 "official_test": official, "train": n_train, "test": n_held, "skipped": skipped,
                 "train_names": train_names, "test_names": test_names}
        (partial / "index.json").write_text(json.dumps(index))
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing usable-looking is left (a full disk, Ctrl-C)
        raise
    say(f"prepared {n_train} training and {n_held} held-out images of {source} in {time.perf_counter() - t0:.0f} s "
        f"into {out}" + (f"; {len(skipped)} unreadable file(s) skipped, listed in {out / 'index.json'}"
                         if skipped else "") + f"; train with --data {out}")
    return out
