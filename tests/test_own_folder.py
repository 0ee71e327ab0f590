"""A new user's own folder: no traceback, no silent surprise, no decoding twice."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_pngs
from introvae.cli import main
from introvae.data import sources

TINY = {"image_size": 16, "in_channels": 3, "latent_dim": 8, "channels": [4, 8, 8], "batch_size": 4,
        "log_every": 2, "image_every": 4, "checkpoint_every": 2, "grid_size": 4, "margin": 5}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    write_pngs(tmp / "imgs", 12)
    (tmp / "tiny.json").write_text(json.dumps(TINY))
    os.environ["INTROVAE_CACHE"] = str(tmp / "cache")
    try:
        assert main(["train", "--data", str(tmp / "imgs"), "--config", str(tmp / "tiny.json"), "--steps", "4",
                     "--vae-steps", "2", "--out", str(tmp / "run"), "--quiet"]) == 0
    finally:
        del os.environ["INTROVAE_CACHE"]
    return tmp


def _one_line(capsys, argv, *words, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


class _CountReads:
    def __init__(self, monkeypatch, delay: float = 0.0):
        self.n = 0
        real = sources.FolderSource.read

        def read(src, k):
            self.n += 1
            if delay:
                time.sleep(delay)
            return real(src, k)

        monkeypatch.setattr(sources.FolderSource, "read", read)


# 1. an output that cannot be written is refused before any work
def test_an_output_under_a_file_is_one_line_before_any_decoding(tmp_path, capsys, monkeypatch, cache):
    write_pngs(tmp_path / "imgs", 8)
    (tmp_path / "imgs" / "notes.txt").write_text("a note")
    reads = _CountReads(monkeypatch)
    _one_line(capsys, ["train", "--data", str(tmp_path / "imgs"), "--steps", "2",
                       "--out", str(tmp_path / "imgs" / "notes.txt" / "run")], "notes.txt is a file")
    assert reads.n == 0
    _one_line(capsys, ["train", "--data", "faces", "--steps", "2", "--out", str(tmp_path / "imgs" / "notes.txt")],
              "is a file, not a directory")


# 2. decoded once, reused by the next command; rebuilt when the folder changes; evaluate decodes what it uses
def test_a_folder_is_decoded_once_and_reused_until_it_changes(tmp_path, monkeypatch, cache, capsys):
    from introvae.data import load

    write_pngs(tmp_path / "imgs", 20)
    reads = _CountReads(monkeypatch)
    first = load(str(tmp_path / "imgs"), image_size=16, in_channels=3)
    assert reads.n == 20 and "decoded 20 images once; cached in" in capsys.readouterr().err
    again = load(str(tmp_path / "imgs"), image_size=16, in_channels=3)
    assert reads.n == 20 and "using its decoded images cached in" in capsys.readouterr().err
    assert (again.train == first.train).all() and (again.test == first.test).all()
    assert len(list((cache / "decoded").iterdir())) == 1
    other_size = load(str(tmp_path / "imgs"), image_size=8, in_channels=3, show_progress=False)
    assert reads.n == 40 and other_size.train.shape[-1] == 8  # another size is another store
    Image.new("RGB", (20, 24), (10, 200, 30)).save(tmp_path / "imgs" / "img000.png")  # an image rewritten
    changed = load(str(tmp_path / "imgs"), image_size=16, in_channels=3, show_progress=False)
    assert reads.n == 60 and not (changed.train == first.train).all() or not (changed.test == first.test).all()


def test_processes_that_need_the_same_folder_at_once_decode_it_once(tmp_path, monkeypatch, cache, capsys):
    """As the processes of a torchrun job do: the first decodes and writes the store, the others wait for it
    (one line says so) and map it. (Threads here: the lock is per open file, as between processes.)"""
    import threading

    from introvae.data import load

    write_pngs(tmp_path / "imgs", 20)
    reads = _CountReads(monkeypatch, delay=0.02)
    got = {}

    def loader(name):
        got[name] = load(str(tmp_path / "imgs"), image_size=16, in_channels=3)

    first = threading.Thread(target=loader, args=("first",))
    first.start()
    time.sleep(0.15)  # the first holds the lock, decoding
    loader("second")
    first.join()
    assert reads.n == 20  # decoded once
    assert torch.equal(got["first"].train, got["second"].train)
    err = capsys.readouterr().err
    assert "waiting for another process that is decoding these images" in err and "decoded 20 images once" in err


def test_a_second_train_resume_and_evaluate_do_not_decode_the_folder(run, tmp_path, monkeypatch, capsys):
    import shutil

    from conftest import tiny_features
    from introvae.evaluate import evaluate_model
    from introvae.metrics import EvalSettings

    monkeypatch.setenv("INTROVAE_CACHE", str(run / "cache"))
    shutil.copytree(run / "run", tmp_path / "run")
    reads = _CountReads(monkeypatch)
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "6", "--quiet"]) == 0
    evaluate_model(tmp_path / "run", EvalSettings(num_samples=6, ref_images=6, pairs=4, neighbours=0, batch_size=6),
                   device="cpu", show_progress=False, features=tiny_features)
    assert reads.n == 0


def test_evaluate_without_a_decoded_copy_decodes_only_what_it_uses(tmp_path, monkeypatch, cache):
    from conftest import tiny_features
    from introvae.evaluate import evaluate_model
    from introvae.metrics import EvalSettings

    write_pngs(tmp_path / "imgs", 40)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert main(["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    for store in (cache / "decoded").iterdir():  # as if the folder had never been decoded
        import shutil

        shutil.rmtree(store)
    reads = _CountReads(monkeypatch)
    evaluate_model(tmp_path / "run", EvalSettings(num_samples=8, ref_images=10, pairs=4, neighbours=0,
                                                  batch_size=8), device="cpu", show_progress=False,
                   features=tiny_features, metrics=("fid",))
    assert reads.n == 10  # the 10 reference images, not the 40 of the folder


# 3. a run that never leaves the warm-up says so
def test_a_run_inside_its_warm_up_is_named_as_a_plain_vae(tmp_path, capsys, cache):
    write_pngs(tmp_path / "imgs", 12)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    base = ["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"), "--steps", "3",
            "--vae-steps", "5", "--quiet"]
    assert main(base + ["--dry-run"]) == 0
    assert "covers the whole run (3 steps)" in capsys.readouterr().out
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "warm-up (5 steps) covers the whole run" in out and "plain VAE" in out


# 4. the preset is named; --help shows no default that will not apply
def test_the_first_line_and_dry_run_name_the_preset(tmp_path, capsys, cache):
    write_pngs(tmp_path / "imgs", 12)
    assert main(["train", "--data", str(tmp_path / "imgs"), "--image-size", "16", "--channels", "4,8,8",
                 "--steps", "1", "--dry-run"]) == 0
    assert "preset rgb64 (chosen for --data" in capsys.readouterr().out
    assert main(["train", "--preset", "faces", "--image-size", "16", "--channels", "4,8,8", "--steps", "1",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert ", preset faces, on faces" in first


def test_help_shows_only_defaults_that_apply(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "else 8" not in text and "else 1)" not in text and "else 0)" not in text
    assert "--in-channels N 1 for grayscale, 3 for RGB (default: set by the preset;" in text
    assert "(default: 0.1)" in text  # every preset agrees: the one value


# 5. outputs that do not surprise
def test_export_to_a_file_name_is_refused(run, tmp_path, capsys):
    _one_line(capsys, ["export", str(run / "run"), "-o", str(tmp_path / "out" / "model.safetensors")],
              "names a directory", "-o " + str(tmp_path / "out" / "model"))
    assert not (tmp_path / "out").exists()


def test_reconstruct_same_names_in_two_folders_and_a_folder_and_a_bad_image(run, tmp_path, capsys):
    write_pngs(tmp_path / "a", 1, seed=1)
    write_pngs(tmp_path / "b", 1, seed=2)
    (tmp_path / "b" / "broken.png").write_bytes(b"no image")
    assert main(["reconstruct", str(run / "run"), str(tmp_path / "a" / "img000.png"), str(tmp_path / "b"),
                 "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    outs = sorted(p.name for p in (tmp_path / "out").glob("*-reconstruction.png"))
    assert outs == ["a_img000-reconstruction.png", "b_img000-reconstruction.png"]
    assert "wrote 2 reconstructions" in captured.out
    assert "skipped 1 unreadable image(s) of 3" in captured.err and "broken.png" in captured.err


def test_evaluate_a_model_with_folder_only_flags_is_refused(run, capsys):
    _one_line(capsys, ["evaluate", str(run / "run"), "--in-channels", "1"], "--in-channels", "a folder of images")
    _one_line(capsys, ["evaluate", str(run / "run"), "--image-size", "32"], "--image-size")


def test_checkpoints_follow_the_umask(run):
    mask = os.umask(0o022)
    os.umask(mask)
    for ck in (run / "run" / "checkpoints").glob("*.pt"):
        assert stat.S_IMODE(ck.stat().st_mode) == 0o666 & ~mask


# 6. messages
def test_threads_before_the_command(run, tmp_path, capsys):
    assert main(["--threads", "1", "sample", str(run / "run"), "-n", "2", "-o", str(tmp_path / "s.png")]) == 0


def test_a_config_json_given_as_a_model_says_it_is_no_checkpoint(run, capsys):
    err = _one_line(capsys, ["sample", str(run / "run" / "config.json"), "-n", "2", "-o", "x.png"],
                    "cannot read checkpoint", "not a file torch.save wrote")
    assert "weights_only" not in err


def test_a_folder_of_images_to_interpolate_is_named_as_a_folder(run, capsys):
    _one_line(capsys, ["interpolate", str(run / "run"), str(run / "imgs"), str(run / "imgs" / "img000.png"),
                       "-o", "x.png"], "is a folder")


# 7. Ctrl-C while the data is read: nothing was started
def test_an_interruption_while_decoding_says_nothing_was_started(tmp_path, capsys, monkeypatch, cache):
    import introvae.trainer as trainer

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "load", interrupted)
    err = _one_line(capsys, ["train", "--data", "faces", "--steps", "2", "--out", str(tmp_path / "run")],
                    "no run was started", status=130)
    assert "nothing was written" in err and not (tmp_path / "run").exists()


# PIL's large-image warnings: one line per decode, with the count
def test_large_images_are_one_warning_line_and_the_limit_is_an_option(tmp_path, capsys, cache):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * k, np.uint8)).save(folder / f"big{k}.png")
    write_pngs(folder, 9)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    from PIL import Image as PILImage

    old = PILImage.MAX_IMAGE_PIXELS
    try:
        assert main(["train", "--data", str(folder), "--config", str(tmp_path / "tiny.json"), "--steps", "1",
                     "--max-image-pixels", "1000", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    finally:
        PILImage.MAX_IMAGE_PIXELS = old
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "pixels were decoded" in ln]
    assert len(lines) == 1 and lines[0].startswith("introvae: warning: imgs: 3 image(s) larger than 1,000 pixels")
    assert "--max-image-pixels" in lines[0]
