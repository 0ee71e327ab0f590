"""introvae prepare: a store that trains exactly as its source, and leaves nothing usable when interrupted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_idx, write_pngs
from introvae.cli import main
from introvae.data import load
from introvae.data import prepared
from introvae.errors import DataError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))


def _same(a, b):
    assert torch.equal(a.train[:], b.train[:]) and torch.equal(a.test[:], b.test[:])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_store_of_a_folder_holds_the_sources_split_bit_for_bit(tmp_path, cache, workers, capsys):
    write_pngs(tmp_path / "imgs", 30)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image")
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16",
                 "--workers", str(workers), "--quiet"]) == 0
    assert "prepared 27 training and 3 held-out images" in capsys.readouterr().out
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert [s[0] for s in index["skipped"]] == ["broken.png"] and len(index["train_names"]) == 27
    store = load(str(tmp_path / "store"), image_size=16, in_channels=3)
    _same(store, load(str(tmp_path / "imgs"), image_size=16, in_channels=3, show_progress=False))
    assert isinstance(np.load(tmp_path / "store" / "train.npy", mmap_mode="r"), np.memmap)


def test_a_store_of_idx_files_and_of_the_faces(tmp_path, cache):
    rng = np.random.default_rng(0)
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte", rng.integers(0, 255, (8, 28, 28)))
    for source in (str(tmp_path / "idx"), "faces"):
        out = tmp_path / f"store-{source[-3:]}"
        assert main(["prepare", source, str(out), "--image-size", "16", "--in-channels", "1", "--quiet",
                     "--workers", "0"]) == 0
        a, b = load(str(out), image_size=16, in_channels=1), load(source, image_size=16, in_channels=1)
        _same(a, b)
        assert a.official_test == b.official_test


def test_training_from_a_store_sees_the_batches_of_the_source(tmp_path, cache):
    from conftest import tiny_config
    from introvae.trainer import Trainer

    write_pngs(tmp_path / "imgs", 24)
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16", "--quiet"]) == 0
    runs = {}
    for name, data in (("source", tmp_path / "imgs"), ("store", tmp_path / "store")):
        cfg = tiny_config(data=str(data), in_channels=3, steps=3, holdout_fraction=0.1)
        t = Trainer(cfg, tmp_path / name, show_progress=False, log=lambda s: None)
        t.train()
        runs[name] = t.run.model.state_dict()
    for k, v in runs["source"].items():
        assert torch.equal(v, runs["store"][k]), k


def test_an_interrupted_prepare_leaves_nothing_that_trains_and_the_next_starts_over(tmp_path, cache,
                                                                                  monkeypatch, capsys):
    write_pngs(tmp_path / "imgs", 12)
    real = prepared._write_part

    def killed(path, *a, **k):
        if path.name == "test.npy":
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(prepared, "_write_part", killed)
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16",
                 "--quiet"]) == 130
    assert "no store was left" in capsys.readouterr().err
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
    (tmp_path / "store.partial").mkdir()  # as a kill -9 would leave it
    monkeypatch.setattr(prepared, "_write_part", real)
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "starting over" in out and prepared.is_store(tmp_path / "store")
    with pytest.raises(DataError):
        load(str(tmp_path / "store.partial"), image_size=16, in_channels=3)  # an empty folder: no images
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_store_that_does_not_fit_is_one_line(tmp_path, cache, capsys):
    write_pngs(tmp_path / "imgs", 12)
    assert main(["prepare", str(tmp_path / "imgs"), str(tmp_path / "store"), "--image-size", "16", "--quiet"]) == 0
    with pytest.raises(DataError, match="prepared with image_size 16, this run needs 32"):
        load(str(tmp_path / "store"), image_size=32, in_channels=3)
    write_pngs(tmp_path / "imgs", 1, seed=9)  # the source changed: img000.png rewritten
    with pytest.raises(DataError, match="changed since"):
        load(str(tmp_path / "store"), image_size=16, in_channels=3)
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    (tmp_path / "store" / "index.json").write_text(json.dumps({**index, "format": 99}))
    with pytest.raises(DataError, match="format 99"):
        load(str(tmp_path / "store"), image_size=16, in_channels=3)
