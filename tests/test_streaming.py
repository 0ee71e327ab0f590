"""Data decoded on access: LMDB databases, large folders, the cached folder index, loader workers."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_pngs
from introvae.data import DataError, LazyImages, batches, load
from introvae.data import sets as data_mod
from introvae.data.index import folder_index
from introvae.trainer import Trainer


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))


def write_lmdb(path, files) -> None:
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=64 * 2**20)
    with env.begin(write=True) as txn:
        for f in files:  # LSUN's layout: key = image id, value = the encoded file
            txn.put(f.stem.encode(), f.read_bytes())
    env.close()


def test_the_folder_index_is_cached_and_refreshed_when_a_subfolder_changes(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    write_pngs(root / "a", 3)
    write_pngs(root / "b", 2, seed=1)
    first = folder_index(root, (".png",))
    assert first == ["a/img000.png", "a/img001.png", "a/img002.png", "b/img000.png", "b/img001.png"]

    def no_walk(*a, **k):
        raise AssertionError("listed the folder again")

    monkeypatch.setattr(os, "walk", no_walk)
    assert folder_index(root, (".png",)) == first  # from the cache
    monkeypatch.undo()
    time.sleep(0.01)
    write_pngs(root / "b", 3, seed=2)  # one more file in a subfolder: its mtime changes
    assert len(folder_index(root, (".png",))) == 6


def test_a_large_folder_is_decoded_on_access_and_gives_the_same_images(tmp_path, monkeypatch, capsys):
    write_pngs(tmp_path / "imgs", 12)
    in_memory = load(str(tmp_path / "imgs"), image_size=16, in_channels=3, holdout_fraction=0.25)
    monkeypatch.setattr(data_mod, "IN_MEMORY_LIMIT", 1000)  # bytes: 12 images of 3x16x16 do not fit
    lazy = load(str(tmp_path / "imgs"), image_size=16, in_channels=3, holdout_fraction=0.25)
    line = capsys.readouterr().err.strip().splitlines()[-1]  # nothing this large is cached silently
    assert f"decoded batch by batch (not cached); `introvae prepare {tmp_path / 'imgs'} STORE --image-size 16" \
        in line
    assert isinstance(lazy.train, LazyImages) and (len(lazy.train), len(lazy.test)) == (9, 3)
    assert torch.equal(lazy.train[:], in_memory.train) and torch.equal(lazy.test[:], in_memory.test)
    assert torch.equal(lazy.train[torch.tensor([4, 0])], in_memory.train[torch.tensor([4, 0])])
    assert lazy.train[2].shape == (3, 16, 16)


def test_lmdb_database_in_loader_workers_trains(tmp_path):
    files = write_pngs(tmp_path / "src", 24)
    write_lmdb(tmp_path / "db", files)
    ds = load(str(tmp_path / "db"), image_size=16, in_channels=1, holdout_fraction=0.25)
    assert isinstance(ds.train, LazyImages) and (len(ds.train), len(ds.test)) == (18, 6)
    folder = load(str(tmp_path / "src"), image_size=16, in_channels=1, holdout_fraction=0.25)
    assert torch.equal(ds.train[:], folder.train)  # keys sort like the file names: the same split

    # Worker processes give exactly the batches of the in-process loop, pinned or not.
    inline = list(batches(ds.train, 4, seed=0, epoch=1))
    workers = list(batches(ds.train, 4, seed=0, epoch=1, workers=2))
    assert [u for u, _ in inline] == [u for u, _ in workers] == [4, 8, 12, 16]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(inline, workers))

    t = Trainer(tiny_config(data=str(tmp_path / "db"), steps=5, loader_workers=2, checkpoint_every=100),
                tmp_path / "run", show_progress=False, log=lambda s: None)
    t.train()
    assert t.step == 5 and (t.run.epoch, t.run.epoch_images) == (1, 4)  # 4 steps of 4 per epoch of 18 images
    assert (tmp_path / "run" / "samples-000000005.png").is_file()


def test_an_unreadable_image_in_a_streamed_set_is_replaced_and_reported(tmp_path, monkeypatch):
    write_pngs(tmp_path / "imgs", 6)
    (tmp_path / "imgs" / "img002.png").write_bytes(b"not a png")
    monkeypatch.setattr(data_mod, "IN_MEMORY_LIMIT", 10)
    ds = load(str(tmp_path / "imgs"), image_size=16, in_channels=1, holdout_fraction=0.0)
    with pytest.warns(UserWarning, match="img002.png"):
        x = ds.train[:]
    assert x.shape == (6, 1, 16, 16)
    src = ds.train.source
    bad = int(np.flatnonzero(np.array(src.names)[ds.train.indices] == "img002.png")[0])
    good = ds.train.indices[bad] + 1  # the next image stands in for it
    assert torch.equal(x[bad], x[int(np.flatnonzero(ds.train.indices == good)[0])])


def test_missing_lmdb_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")
    real_import = builtins.__import__

    def no_lmdb(name, *a, **k):
        if name == "lmdb":
            raise ImportError("no lmdb")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lmdb)
    with pytest.raises(DataError, match="needs the lmdb package"):
        load(str(tmp_path / "db"), image_size=16, in_channels=1)


def test_stats_record_how_long_steps_wait_for_data_and_a_slow_source_gets_one_line(tmp_path, faces16):
    import time as _time

    from introvae.stats import read_stats
    from introvae.trainer import Trainer

    class Slow:  # a source that takes 50 ms per batch, as a decoder on one core would
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, idx):
            _time.sleep(0.05)
            return self.images[idx]

    from introvae.data import ImageSet

    slow = ImageSet("slow", Slow(faces16.train), faces16.test)
    said = []
    # pictures and a checkpoint only at the end: at step 3 they fell inside the second window and, on a loaded
    # machine (matplotlib's first import), outweighed its wait
    t = Trainer(tiny_config(steps=6, log_every=3, image_every=6, checkpoint_every=6), tmp_path / "run", data=slow,
                show_progress=False, log=said.append)
    t.train()
    rows = read_stats(tmp_path / "run")
    assert all(0.1 < r["data_wait"] <= 1.0 for r in rows), [r["data_wait"] for r in rows]
    assert sum("waiting for batches" in s for s in said) == 1 and "introvae prepare" in " ".join(said)
    fast = Trainer(tiny_config(steps=3, log_every=3), tmp_path / "fast", data=faces16, show_progress=False,
                   log=said.append)
    fast.train()
    assert read_stats(tmp_path / "fast")[-1]["data_wait"] < 0.5
