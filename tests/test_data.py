import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from introvae.data import DataError, batches, load, read_image
from introvae.data.sources import read_idx

from conftest import write_idx, write_pngs


def test_folder_is_read_recursively_cropped_resized_and_split(tmp_path):
    write_pngs(tmp_path / "a", 6, size=(20, 30))
    write_pngs(tmp_path / "a" / "nested", 4, size=(40, 10), seed=1)
    ds = load(str(tmp_path / "a"), image_size=16, in_channels=3, holdout_fraction=0.2, show_progress=False)
    assert ds.train.shape == (8, 3, 16, 16) and ds.test.shape == (2, 3, 16, 16)
    assert ds.train.dtype == torch.uint8
    again = load(str(tmp_path / "a"), image_size=16, in_channels=3, holdout_fraction=0.2, show_progress=False)
    assert torch.equal(ds.test, again.test)  # the held-out split is deterministic


def test_centre_crop_keeps_the_middle(tmp_path):
    a = np.zeros((10, 30), np.uint8)
    a[:, 10:20] = 255  # a white middle third on a wide image
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = read_image(tmp_path / "wide.png", image_size=16, in_channels=1)
    assert x.shape == (1, 16, 16) and x.min() > 0.95  # the crop is the white square only


def test_bad_images_are_skipped_and_counted(tmp_path):
    write_pngs(tmp_path, 5)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    good = (tmp_path / "img000.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("CMYK", (20, 20), (10, 20, 30, 40)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "alpha.png")
    Image.new("P", (20, 20)).save(tmp_path / "palette.png")
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        ds = load(str(tmp_path), image_size=16, in_channels=3, holdout_fraction=0.0, show_progress=False)
    assert len(ds.train) == 8  # 5 generated + CMYK + RGBA + palette
    assert sorted(name for name, _ in ds.skipped) == ["junk.jpg", "truncated.png", "zero.png"]
    # transparent pixels become white, not black
    alpha = read_image(tmp_path / "alpha.png", image_size=16, in_channels=3)
    assert alpha.min() > 0.99


def test_empty_or_unreadable_folder_and_wrong_paths_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load(str(tmp_path / "missing"), image_size=16, in_channels=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load(str(tmp_path / "empty"), image_size=16, in_channels=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the 1 images"):
        load(str(tmp_path / "bad"), image_size=16, in_channels=1, show_progress=False)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="neither a folder"):
        load(str(tmp_path / "notes.txt"), image_size=16, in_channels=1)


def test_zip_of_images(tmp_path):
    paths = write_pngs(tmp_path / "src", 4)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for p in paths:
            z.write(p, f"inner/{p.name}")
    ds = load(str(tmp_path / "imgs.zip"), image_size=16, in_channels=1, holdout_fraction=0.25,
              show_progress=False)
    assert ds.train.shape == (3, 1, 16, 16) and len(ds.test) == 1


def test_idx_directory_uses_train_and_t10k_files(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), train)
    ds = load(str(tmp_path), image_size=32, in_channels=1)
    assert ds.train.shape == (12, 1, 32, 32) and ds.test.shape == (3, 1, 32, 32)
    same = load(str(tmp_path), image_size=28, in_channels=1)
    assert torch.equal(same.train[:, 0], torch.from_numpy(train))  # no resize at the native size
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="truncated"):
        load(str(tmp_path), image_size=32, in_channels=1)


def test_builtin_faces_are_the_100_lfw_faces():
    ds = load("faces", image_size=32, in_channels=1, holdout_fraction=0.1)
    assert ds.train.shape == (90, 1, 32, 32) and ds.test.shape == (10, 1, 32, 32)
    rgb = load("faces", image_size=16, in_channels=3, holdout_fraction=0.1)
    assert rgb.train.shape == (90, 3, 16, 16) and torch.equal(rgb.train[:, 0], rgb.train[:, 1])


def test_batches_depend_only_on_seed_and_epoch_and_can_start_mid_epoch():
    data = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    full = list(batches(data, 3, seed=1, epoch=2))
    assert len(full) == 3  # the partial last batch is dropped
    assert [i for i, _ in full] == [3, 6, 9]  # images of the epoch used after each batch
    tail = list(batches(data, 3, seed=1, epoch=2, start=3))
    assert [i for i, _ in tail] == [6, 9] and torch.equal(tail[0][1], full[1][1])
    assert not torch.equal(full[0][1], next(iter(batches(data, 3, seed=1, epoch=3)))[1])
    assert 0.0 <= full[0][1].min() and full[0][1].max() <= 9 / 255 + 1e-6


def test_mirrored_batches_flip_about_half_the_images_the_same_way_every_time_and_after_a_resume():
    """--mirror (default): the same order as without it, each image flipped left-right or not as drawn from
    (seed, epoch), so a run resumed mid-epoch, or split over processes, flips the same images."""
    n = 64
    data = torch.arange(n * 4, dtype=torch.uint8).view(n, 1, 1, 4)  # row k: 4k .. 4k+3, left to right
    plain = list(batches(data, 8, seed=5, epoch=1))
    flipped = list(batches(data, 8, seed=5, epoch=1, mirror=True))
    assert [i for i, _ in flipped] == [i for i, _ in plain]
    was_flipped = []
    for (_, x), (_, y) in zip(plain, flipped):
        assert torch.equal(x.sort(-1).values, y.sort(-1).values)  # the same images, in the same order
        for a, b in zip(x, y):
            assert torch.equal(b, a) or torch.equal(b, a.flip(-1))
            was_flipped.append(not torch.equal(b, a))
    assert 20 <= sum(was_flipped) <= 44  # about half of 64
    again = list(batches(data, 8, seed=5, epoch=1, mirror=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(flipped, again))
    tail = list(batches(data, 8, seed=5, epoch=1, start=16, mirror=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(flipped[2:], tail))
    halves = [list(batches(data, 4, seed=5, epoch=1, rank=r, world_size=2, mirror=True)) for r in (0, 1)]
    assert torch.equal(torch.cat([halves[0][3][1], halves[1][3][1]]), flipped[3][1])
    other_epoch = [not torch.equal(b, a) for (_, x), (_, y) in zip(list(batches(data, 8, seed=5, epoch=2)),
                                                                  list(batches(data, 8, seed=5, epoch=2, mirror=True)))
                   for a, b in zip(x, y)]
    assert other_epoch != was_flipped


def test_a_checkpoint_from_before_mirroring_resumes_without_it(tmp_path):
    from introvae import checkpoint

    from conftest import tiny_config

    cfg = tiny_config().to_dict()
    del cfg["mirror"]  # as 0.2 wrote it
    path = tmp_path / "step-000000001.pt"
    torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "version": "0.2.0", "config": cfg}, path)
    assert checkpoint.load(path)["config"]["mirror"] is False
    assert tiny_config().mirror is True  # new runs mirror by default


def test_batches_of_several_processes_are_slices_of_the_global_batch():
    data = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).contiguous()
    whole = list(batches(data, 6, seed=3, epoch=0))
    parts = [list(batches(data, 3, seed=3, epoch=0, rank=r, world_size=2)) for r in (0, 1)]
    assert [i for i, _ in parts[0]] == [i for i, _ in whole] == [6, 12, 18]
    for k, (_, x) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), x)
    # Resuming with another split mid-epoch continues the same permutation.
    one = list(batches(data, 4, seed=3, epoch=0, start=6))
    assert torch.equal(torch.cat([x for _, x in one]), torch.cat([x for _, x in whole[1:]])[:12])


def test_raw_batches_converted_on_the_device_equal_the_host_batches():
    """Batches cross to the device as uint8 and are scaled and flipped there: the same values, bit for bit."""
    from introvae.data import batches
    from introvae.data.batches import to_device

    data = torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    host = list(batches(data, 4, seed=3, epoch=1, mirror=True))
    raw = list(batches(data, 4, seed=3, epoch=1, mirror=True, raw=True))
    assert all(x.dtype == torch.uint8 for _, x, _ in raw)
    for (u1, a), (u2, x, flip) in zip(host, raw):
        b = to_device(x, flip, torch.device("cpu"), channels_last=True)
        assert u1 == u2 and torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)
