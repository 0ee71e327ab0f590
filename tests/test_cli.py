"""The command line end to end on a tiny config, and its one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from introvae.cli import main

from conftest import write_pngs

TINY = {"image_size": 16, "in_channels": 3, "latent_dim": 8, "channels": [4, 8, 8], "batch_size": 4,
        "log_every": 2, "image_every": 4, "checkpoint_every": 2, "grid_size": 4, "margin": 5}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_pngs(tmp / "imgs", 12)
    (tmp / "tiny.json").write_text(json.dumps(TINY))
    rc = main(["train", "--data", str(tmp / "imgs"), "--config", str(tmp / "tiny.json"), "--steps", "4",
               "--vae-steps", "2", "--seed", "3", "--out", str(tmp / "run"), "--quiet"])
    assert rc == 0
    return tmp


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_train_writes_the_run_with_cli_overrides_applied(trained):
    cfg = json.loads((trained / "run" / "config.json").read_text())
    model = cfg["model"]
    assert (cfg["steps"], cfg["vae_steps"], cfg["seed"], model["image_size"], model["channels"]) == (4, 2, 3, 16, [4, 8, 8])
    assert cfg["margin"] == 5 and cfg["data"] == str(trained / "imgs")
    assert (trained / "run" / "samples-000000004.png").is_file() and (trained / "run" / "kl.png").is_file()


def test_sample_grid_and_files_are_reproducible(trained, tmp_path):
    assert main(["sample", str(trained / "run"), "-n", "4", "--seed", "5", "-o", str(tmp_path / "a.png")]) == 0
    assert main(["sample", str(trained / "run"), "-n", "4", "--seed", "5", "-o", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    assert main(["sample", str(trained / "run"), "-n", "3", "--seed", "6", "-o", str(tmp_path / "dir")]) == 0
    files = sorted((tmp_path / "dir").glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (16, 16)
    # a path with an image suffix is a file of that format, not a folder of that name
    assert main(["sample", str(trained / "run"), "-n", "4", "-o", str(tmp_path / "out" / "samples.jpg")]) == 0
    assert (tmp_path / "out" / "samples.jpg").is_file() and Image.open(tmp_path / "out" / "samples.jpg").format == "JPEG"


def test_reconstruct_interpolate_and_export(trained, tmp_path):
    imgs = sorted((trained / "imgs").glob("*.png"))[:2]
    assert main(["reconstruct", str(trained / "run"), *map(str, imgs), "-o", str(tmp_path / "rec")]) == 0
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "img000-pair.png", "img000-reconstruction.png", "img001-pair.png", "img001-reconstruction.png"]
    pair = Image.open(tmp_path / "rec" / "img000-pair.png")
    assert pair.size[0] > 2 * pair.size[1] - 10  # two cells side by side: input | reconstruction
    assert main(["interpolate", str(trained / "run"), str(imgs[0]), str(imgs[1]), "--steps", "5",
                 "-o", str(tmp_path / "strip.png")]) == 0
    w, h = Image.open(tmp_path / "strip.png").size
    assert w > 4 * h  # one row of five cells
    assert main(["export", str(trained / "run"), "-o", str(tmp_path / "model")]) == 0
    assert main(["sample", str(tmp_path / "model"), "-n", "4", "--seed", "5", "-o", str(tmp_path / "e.png")]) == 0
    assert main(["sample", str(trained / "run"), "-n", "4", "--seed", "5", "-o", str(tmp_path / "r.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "e.png")), np.asarray(Image.open(tmp_path / "r.png")))


def test_resume_takes_no_data_or_preset_and_a_finished_run_resumed_as_it_is_does_nothing(trained, capsys):
    _one_line_error(capsys, ["train", "--resume", str(trained / "run"), "--data", "faces"], "--resume", "--data")
    _one_line_error(capsys, ["train", "--resume", str(trained / "run"), "--preset", "faces"], "--resume")
    # a finished run resumed is a no-op that still succeeds: no new steps, no new checkpoint
    from introvae import checkpoint

    stats_before = (trained / "run" / "stats.jsonl").read_text()
    newest = checkpoint.latest(trained / "run")
    capsys.readouterr()
    assert main(["train", "--resume", str(trained / "run"), "--quiet"]) == 0
    assert "has trained all its 4 steps already" in capsys.readouterr().out  # said, not silent
    assert checkpoint.latest(trained / "run") == newest and newest.name == "step-000000004.pt"
    assert (trained / "run" / "stats.jsonl").read_text() == stats_before


@pytest.mark.parametrize("argv, words", [
    (["train", "--data", "/no/such/folder", "--steps", "2"], ["no such file or directory", "/no/such/folder"]),
    (["train", "--data", "faces", "--steps", "2", "--image-size", "48"], ["image_size", "power of two"]),
    (["train", "--data", "faces", "--steps", "2", "--margin", "-3"], ["margin", ">= 0"]),
    (["train", "--data", "faces", "--steps", "two"], ["--steps", "expected int"]),
    (["train", "--data", "faces", "--steps", "2", "--preset", "bogus"], ["unknown preset 'bogus'"]),
    (["train", "--data", "faces"], ["--steps or --epochs"]),
    (["train", "--resume", "/no/such/run"], ["not a run directory"]),
    (["sample", "/no/such/model", "-n", "2", "-o", "x.png"], ["model not found"]),
    (["train", "--preset", "celeba128", "--steps", "2"], ["data: the preset 'celeba128' names no data set"]),
    (["train", "--data", "faces", "--steps", "2", "--device", "cuda"], ["device: 'cuda'", "no CUDA device"]),
    (["train", "--data", "faces", "--steps", "2", "--device", "tpu"], ["device:"]),
    (["frobnicate"], ["invalid choice"]),
    (["train", "--data", "faces", "--steps", "2", "--threads", "0"], ["train: argument --threads: must be >= 1"]),
    (["train", "--data", "faces", "--stepz", "2"], ["introvae: error: train: unrecognized arguments: --stepz 2",
                                                    "(see introvae train --help)"]),
    (["sample", "m", "-o", "x.png", "--bogus"], ["sample: unrecognized arguments: --bogus", "introvae sample --help"]),
    (["train", "--data", "faces", "--steps", "2", "--config", "/no/such.yaml"], ["config file not found"]),
    (["demo", "--steps", "0"], ["demo: --steps must be >= 1, got 0"]),  # ran the whole demo
    (["compare", "--data", "rings", "--budget", "64"], ["rings is a 2D density, not images", "--objective"]),
    (["calibrate", "--data", "8gaussians", "--steps", "2"], ["8gaussians is a 2D density, not images"]),
])
def test_user_errors_are_one_line_with_status_2(capsys, argv, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, argv, *words)
    assert not list(tmp_path.iterdir())  # a command refused leaves nothing behind (compare left compare-rings/)


@pytest.mark.parametrize("argv", [
    "train --data faces --steps 2 --out FILE/run",
    "train --data 8gaussians --steps 2 --out FILE/run",
    "sample RUN -n 2 -o FILE/s.png",
    "sample RUN -n 2 -o FILE/samples",
    "reconstruct RUN IMG -o FILE/rec",
    "interpolate RUN IMG IMG -o FILE/strip.png",
    "export RUN -o FILE/model",
    "evaluate RUN --num-samples 8 -o FILE/eval",
    "prepare faces FILE/store --image-size 16",
    "compare --data faces --budget 64 --out FILE/compare",
])
def test_an_output_under_a_file_is_refused_before_any_work_in_one_line(trained, tmp_path, capsys, argv):
    """-o or --out under a regular file: one line naming the command, the flag and the file, status 2, before the
    command starts its work (nothing written beside)."""
    (tmp_path / "file").write_text("not a folder")
    flag = "-o" if " -o " in argv else "--out"
    argv = argv.replace("FILE", str(tmp_path / "file")).replace("RUN", str(trained / "run"))
    argv = argv.replace("IMG", str(trained / "imgs" / "img000.png")).split()
    _one_line_error(capsys, argv, f"{argv[0]}: {flag} ", f"{tmp_path / 'file'} is a file, so no directory can be made")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize("errno_, words", [(13, "Permission denied"), (28, "No space left on device")])
def test_a_write_the_file_system_refuses_later_is_one_line_naming_the_path(trained, tmp_path, capsys, monkeypatch,
                                                                           errno_, words):
    """What a check at start cannot see (a disk that fills, a mount that refuses): one line, the path, status 2."""
    import introvae.grids

    def refuse(images, path, **kw):
        raise OSError(errno_, words, str(path))

    monkeypatch.setattr(introvae.grids, "save_grid", refuse)
    _one_line_error(capsys, ["sample", str(trained / "run"), "-n", "2", "-o", str(tmp_path / "s.png")],
                    f"introvae: error: {tmp_path / 's.png'}: {words}")


def test_an_oserror_without_a_users_path_keeps_its_traceback(monkeypatch):
    import introvae.commands

    def broken(args):
        raise OSError(5, "Input/output error")  # no path: a bug or a failing device, the traceback is wanted

    monkeypatch.setitem(introvae.commands.COMMANDS, "presets", broken)
    with pytest.raises(OSError, match="Input/output error"):
        main(["presets"])


def test_a_train_that_stops_on_bad_input_leaves_no_runs_folder(monkeypatch, capsys, tmp_path):
    from introvae.runs import new_run_dir

    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["train", "--data", "faces", "--steps", "2", "--device", "cuda"], "no CUDA device")
    assert not (tmp_path / "runs").exists()
    assert new_run_dir(tmp_path / "runs", "faces") == tmp_path / "runs" / "00000-faces"
    assert not (tmp_path / "runs").exists()  # numbering creates nothing
    (tmp_path / "runs" / "00004-x y").mkdir(parents=True)
    (tmp_path / "runs" / "notes").mkdir()
    assert new_run_dir(tmp_path / "runs", "my data") == tmp_path / "runs" / "00005-my_data"


def test_threads_sets_the_cpu_threads_before_the_command_runs(monkeypatch, capsys, tmp_path):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    _one_line_error(capsys, ["sample", "/no/such/model", "-o", str(tmp_path / "x.png"), "--threads", "3"],
                    "model not found")
    assert calls == [3]
    _one_line_error(capsys, ["sample", "/no/such/model", "-o", str(tmp_path / "x.png")], "model not found")
    assert calls == [3]  # not given: PyTorch's default stays


def test_training_into_an_existing_run_is_refused(trained, capsys):
    _one_line_error(capsys, ["train", "--data", "faces", "--steps", "2", "--out", str(trained / "run")],
                    "already holds a run", "--resume")


def test_reconstruct_of_a_non_image_is_a_clear_error(trained, tmp_path, capsys):
    (tmp_path / "x.png").write_text("not an image")
    _one_line_error(capsys, ["reconstruct", str(trained / "run"), str(tmp_path / "x.png"), "-o", str(tmp_path)],
                    "cannot read image")


def test_help_explains_the_hyper_parameters(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for words in ("hinge margin of Eq. 11", "plain VAE", "reconstruction error L_AE", "Algorithm 1",
                  "(default: set by the preset;", "(default: 0.1)", "--no-channels-last", "--holdout-fraction",
                  "--adam-beta1", "--keep-checkpoints", "--max-bad-steps", "--grid-size", "--checkpoint-minutes"):
        assert words in out, words
    # every config field is a flag of train
    from introvae.config import flat_fields

    for f in flat_fields():
        assert "--" + f.name.replace("_", "-") in out, f.name


def test_calibrate_prints_a_suggested_margin(tmp_path, capsys):
    write_pngs(tmp_path / "imgs", 10)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert main(["calibrate", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "suggested margin: --margin" in out and "KL of training images" in out
    # and where --margin auto would start: 1.5x the moving average of the KLs it logged (every 2 steps here)
    import re

    auto = float(re.search(r"would start the game at m = ([0-9.]+)", out).group(1))
    kl = float(re.search(r"KL of training images: ([0-9.]+) nats", out).group(1))
    assert 0 < auto and auto == pytest.approx(1.5 * kl, rel=0.5)


def test_suggested_margin_is_a_little_above_the_vae_kl():
    from introvae.calibrate import suggest_margin

    assert suggest_margin(22.7) == 35.0  # 34.05 rounded up
    assert suggest_margin(100.0) == 150.0  # multiples of 5 above 50
    assert suggest_margin(41.0) == 65.0  # 61.5 rounded up to a multiple of 5
    assert suggest_margin(0.1) == 1.0


@pytest.mark.slow
def test_evaluate_a_run_and_a_folder_with_the_real_inception(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    assert main(["evaluate", str(trained / "run"), "--num-samples", "8", "--pairs", "10", "--ref-images", "8",
                 "--neighbours", "3", "--quiet", "--device", "cpu", "--batch-size", "4", "-o", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "MS-SSIM" in out and "PSNR" in out and "step 4" in out and "recall" in out
    assert "skipped" not in out, out
    m = json.loads((tmp_path / "ev" / "metrics.jsonl").read_text())
    assert m["metrics"]["fid"]["samples"] == 8 and m["metrics"]["fid"]["value"] > 0 and m["step"] == 4
    assert m["data"] == str(trained / "imgs") and m["device"] == "cpu"
    assert main(["sample", str(trained / "run"), "-n", "6", "-o", str(tmp_path / "gen")]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tmp_path / "gen"), "--data", str(trained / "imgs"), "--image-size", "16",
                 "--pairs", "10", "--quiet"]) == 0
    # never into the user's image folder: ./evaluate-NAME
    assert json.loads((tmp_path / "evaluate-gen" / "metrics.jsonl").read_text())["metrics"]["fid"]["samples"] == 6
    assert not (tmp_path / "gen" / "metrics.jsonl").exists()
    _one_line_error(capsys, ["evaluate", str(tmp_path / "gen"), "--pairs", "10"], "--data", "--image-size")
    _one_line_error(capsys, ["evaluate", str(trained / "run"), "--num-samples", "1"], "--num-samples")


def test_unreadable_images_are_one_plain_warning_line_and_a_list_in_the_run(tmp_path, capsys):
    write_pngs(tmp_path / "imgs", 12)
    for name in ("broken1.png", "broken2.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"not an image at all")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert main(["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("introvae: warning: ")
    assert "skipped 2 unreadable image(s) of 14" in warnings[0] and "UserWarning" not in captured.err
    assert "listed in" in captured.out and "bad_images.txt" in captured.out
    listed = (tmp_path / "run" / "bad_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in listed) == ["broken1.png", "broken2.jpg"]


def test_the_version_is_the_same_in_the_package_the_changelog_and_the_citation():
    from pathlib import Path

    from introvae import __version__

    root = Path(__file__).resolve().parent.parent
    newest = next(line for line in (root / "CHANGELOG.md").read_text().splitlines() if line.startswith("## "))
    assert newest.startswith(f"## {__version__} (")
    assert f'version: "{__version__}"' in (root / "CITATION.cff").read_text()
