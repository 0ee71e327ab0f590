"""introvae compare on tiny data: every objective trained and scored alike, a table and a picture, resumable."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_features, write_pngs
from introvae.cli import main
from introvae.metrics import fid as fidlib


@pytest.fixture
def stub_inception(monkeypatch, tmp_path):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fidlib, "load_inception", lambda device="cpu", **_: tiny_features)


def _argv(tmp_path, budget="96"):
    return ["compare", "--data", str(tmp_path / "imgs"), "--budget", budget, "--image-size", "16",
            "--eval-samples", "16", "--out", str(tmp_path / "cmp"), "--device", "cpu", "--quiet"]


def test_compare_trains_scores_and_resumes(tmp_path, stub_inception, capsys, monkeypatch):
    import introvae.presets as presets

    write_pngs(tmp_path / "imgs", 48)
    # a tiny network and a short warm-up for the folder's preset, so that the test takes seconds
    small = presets.PRESETS["rgb64"].replace(image_size=16, channels=(4, 8, 8), latent_dim=8, vae_steps=2,
                                            batch_size=8)
    monkeypatch.setitem(presets.PRESETS, "rgb64", small)
    assert main(_argv(tmp_path)) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["objective"] for r in rows] == ["introvae", "soft-introvae", "vae"]
    assert all(r["steps"] * r["batch_size"] <= 96 and r["fid"] > 0 and r["psnr"] > 0 for r in rows)
    assert "| IntroVAE | 0 | 12 x 8 |" in out and "Protocol: 16 samples vs 16 train images" in out
    assert (tmp_path / "cmp" / "samples.png").is_file()
    # run again: nothing is trained or scored twice
    assert main(_argv(tmp_path)) == 0
    again = capsys.readouterr().out
    assert again.count("already trained") == 3
    assert len([ln for ln in (tmp_path / "cmp" / "vae-s0" / "metrics.jsonl").read_text().splitlines()]) == 1
    # introvae info on the folder: its table and each run's state; without compare.md, the command that resumes
    assert main(["info", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "a folder of introvae compare, 3 run(s); its table, compare.md:" in printed
    assert "  | IntroVAE | 0 | 12 x 8 |" in printed and "vae-s0             VAE, step 12, finished" in printed
    (tmp_path / "cmp" / "compare.md").unlink()
    assert main(["info", str(tmp_path / "cmp")]) == 0
    assert "the same introvae compare command resumes it" in capsys.readouterr().out


def test_a_budget_inside_the_warm_up_is_refused_in_one_line(tmp_path, stub_inception, capsys):
    write_pngs(tmp_path / "imgs", 24)
    assert main(_argv(tmp_path, budget="64")) == 2  # rgb64's 500 VAE warm-up steps dwarf 4 steps of 16
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "leaves no step after the" in err
    assert main(["compare", "--data", "faces", "--budget", "lots"]) == 2


def test_unreadable_images_are_one_line_and_leave_no_output_folder(tmp_path, stub_inception, capsys):
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):  # found only when the first run decodes them, after the plan opened the folder
        (tmp_path / "imgs" / name).write_bytes(b"not an image")
    assert main(_argv(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "none of the 2 images" in err
    assert not (tmp_path / "cmp").exists()


def test_a_time_budget_trains_each_objective_for_that_long_and_resumes_within_it(tmp_path, stub_inception, capsys,
                                                                               monkeypatch):
    import introvae.presets as presets
    from introvae.compare import Budget, parse_budget

    assert parse_budget("30min") == Budget(seconds=1800) and parse_budget("2h") == Budget(seconds=7200)
    assert parse_budget("90s") == Budget(seconds=90) and parse_budget("1.2m") == Budget(images=1_200_000)
    write_pngs(tmp_path / "imgs", 48)
    small = presets.PRESETS["rgb64"].replace(image_size=16, channels=(4, 8, 8), latent_dim=8, vae_steps=2,
                                            batch_size=8, log_every=2)
    monkeypatch.setitem(presets.PRESETS, "rgb64", small)
    monkeypatch.setattr("introvae.progress.LOG_EVERY_S", 0.5)  # the bar's line in a log: every 0.5 s, not 60 s
    argv = _argv(tmp_path, budget="3s")
    argv[argv.index("--quiet")] = "--objectives=introvae,vae"
    assert main(argv) == 0
    out, err = capsys.readouterr()
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["objective"] for r in rows] == ["introvae", "vae"]
    # each trained about 3 s (it stops at the next log step), far past the warm-up, far short of the step cap
    assert all(2.5 <= r["train_s"] < 30 and 2 < r["steps"] < 1000 for r in rows), rows
    assert "3s" not in out and "0.05 min of training" in out and "Resume with" not in out
    # while a time budget trains, a bar counts its steps (no total: the step count is only a cap), and no time
    # left is estimated from that cap
    bars = [ln for ln in err.splitlines() if ln.startswith("training: ")]
    assert bars and all("step [" in ln and "/" not in ln.split("step [")[0] for ln in bars), err[-600:]
    assert "left" not in err, err[-600:]
    assert main(argv) == 0  # again: both are done
    assert capsys.readouterr().out.count("already trained") == 2


def test_on_fashion_mnist_each_objective_starts_from_its_own_preset():
    from introvae.compare import config_for
    from introvae.presets import PRESETS

    intro, soft, vae = (config_for(o, "fashion-mnist", image_size=None, seed=3, images=32_000)
                        for o in ("introvae", "soft-introvae", "vae"))
    # the VAE baseline is the screened one (cross-entropy, beta 3), not the IntroVAE preset's Gaussian beta 10
    assert (vae.objective, vae.likelihood, vae.beta, vae.batch_size) == ("vae", "bernoulli", 3.0, 16)
    assert (soft.objective, soft.batch_size, soft.model.latent_dim, soft.beta_neg) == ("soft-introvae", 16, 32, 256.0)
    assert (intro.objective, intro.likelihood, intro.beta) == ("introvae", "gaussian", 10.0)
    # the same budget of images seen for each, and otherwise the presets' fields
    assert (intro.steps, soft.steps, vae.steps) == (2000, 2000, 2000) and vae.seed == soft.seed == 3
    assert [k for k, _, _ in PRESETS["fashion-mnist-vae"].changes(vae)] == ["seed", "steps", "image_every", "logger"]


def test_an_epoch_budget_gives_each_objective_whole_passes_over_the_training_images(tmp_path, monkeypatch):
    import introvae.presets as presets
    from introvae.compare import Budget, parse_budget, plan, training_images
    from introvae.errors import UserError

    assert parse_budget("5epochs") == parse_budget("5 epochs") == Budget(epochs=5.0)
    assert parse_budget("1epoch") == Budget(epochs=1.0) and parse_budget("0.5ep") == Budget(epochs=0.5)
    assert Budget(epochs=1.0).words() == "1 epoch" and Budget(epochs=2.5).words() == "2.5 epochs"
    for bad in ("0epochs", "-1epoch", "xepochs"):
        with pytest.raises(UserError, match="in epochs must be a positive number"):
            parse_budget(bad)
    write_pngs(tmp_path / "imgs", 40)  # a folder holds out 10 %: 36 training images
    small = presets.PRESETS["rgb64"].replace(image_size=16, channels=(4, 8, 8), latent_dim=8, batch_size=8)
    monkeypatch.setitem(presets.PRESETS, "rgb64", small)
    plans = plan(str(tmp_path / "imgs"), Budget(epochs=3.0), objectives=["introvae", "soft-introvae", "vae"],
                 out=tmp_path / "cmp")
    # 36 // 8 = 4 whole batches per epoch for the preset's batch of 8, Soft-IntroVAE's too
    assert training_images(str(tmp_path / "imgs")) == 36
    assert [(p.objective, p.config.batch_size, p.config.steps) for p in plans] == [
        ("introvae", 8, 12), ("soft-introvae", 8, 12), ("vae", 8, 12)]
    assert all(p.config.image_every == p.config.steps for p in plans)
