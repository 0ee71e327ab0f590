"""The 2D density benchmark: the densities, the scores (against torch's kl_div as the authors use it, and on
known inputs), training with every objective, and the command line."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import a_2d_run_killed_after_checkpoint
from introvae.cli import main
from introvae.errors import ConfigError, UserError
from introvae.provenance import read_sessions
from introvae.toy2d import DENSITIES, RADIUS, ToyConfig, ToyVAE, evaluate, load_run, sample, train
from introvae.toy2d.scores import histogram, scores


def test_the_densities_have_their_shapes_and_stay_in_the_scored_square():
    for name in DENSITIES:
        x = sample(name, 4000, seed=1)
        assert x.shape == (4000, 2) and x.dtype == torch.float32
        assert torch.equal(x, sample(name, 4000, seed=1)) and not torch.equal(x, sample(name, 4000, seed=2))
        assert (x.abs() < 2 * RADIUS[name]).float().mean() > 0.99, name
    g8 = sample("8gaussians", 4000, seed=0)
    assert torch.allclose(g8.norm(dim=1), torch.full((4000,), 2 / 1.414), atol=0.1)  # on the circle
    angles = torch.atan2(g8[:, 1], g8[:, 0]) / (2 * math.pi / 8)
    assert (angles - angles.round()).abs().max() < 0.05 and len(set((angles.round() % 8).tolist())) == 8  # 8 modes
    radii = sample("rings", 4000, seed=0).norm(dim=1)
    nearest = torch.tensor([0.75, 1.5, 2.25, 3.0])[(radii.unsqueeze(1) - torch.tensor([0.75, 1.5, 2.25, 3.0])).abs()
                                                    .argmin(1)]
    assert (radii - nearest).abs().mean() < 0.1
    cb = sample("checkerboard", 4000, seed=0) / 2  # unit squares: only one colour is used
    assert ((torch.floor(cb[:, 0]) + torch.floor(cb[:, 1])) % 2 == 0).all()


def test_scores_follow_the_authors_kl_div_and_the_textbook():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5000, 2)), rng.normal(size=(5000, 2)) * 0.5 + 0.5
    s = scores(b, a, r=2.0)
    p, q = torch.tensor(histogram(a, 2.0)), torch.tensor(histogram(b, 2.0))
    m = (p + q) / 2
    # the authors: kl_div(log q, p, 'batchmean') and 1/2 [kl_div(log p, M) + kl_div(log q, M)]
    assert s["kl"] == pytest.approx(F.kl_div(torch.log(q + 1e-14), p, reduction="batchmean").item(), rel=1e-9)
    jsd = 0.5 * (F.kl_div(torch.log(p + 1e-14), m, reduction="batchmean")
                 + F.kl_div(torch.log(q + 1e-14), m, reduction="batchmean"))
    assert s["jsd"] == pytest.approx(jsd.item(), rel=1e-9)
    same = scores(a, a, r=2.0)
    assert all(abs(v) < 1e-9 for v in same.values()), same  # 0 up to the 1e-14 added inside the logs
    far = scores(a * 0.1 + 2.5, a * 0.1 - 2.5, r=2.0)  # disjoint supports: the textbook JSD is log 2
    assert far["jsd_textbook"] == pytest.approx(math.log(2), rel=1e-6)
    assert 0 < s["jsd_textbook"] < math.log(2)


def test_every_objective_trains_and_writes_its_run(tmp_path):
    for name, objective, extra in (("vae", "vae", {}), ("introvae", "introvae", {"margin": 3.0}),
                                   ("introvae-auto", "introvae", {}), ("soft-introvae", "soft-introvae", {}),
                                   ("soft-introvae-bf16", "soft-introvae", {"precision": "bf16"})):
        cfg = ToyConfig(density="rings", objective=objective, steps=12, vae_steps=4, batch_size=64, log_every=4,
                        eval_points=500, score_draws=3, **extra)
        out = tmp_path / name
        result = train(cfg, out, progress=False)
        assert all(math.isfinite(result[k]) for k in ("kl", "jsd", "kl_textbook", "jsd_textbook"))
        rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [4, 8, 12]
        assert ("kl_fake" in rows[-1]) == (objective != "vae") and "kl_fake" not in rows[0]
        assert (out / "density.png").stat().st_size > 1000
        assert (out / "kl.png").is_file() == (objective == "introvae")  # Fig. 5 where there is a margin
        if objective == "introvae":  # the margin in force is logged: the number given, or auto's
            assert rows[0].get("margin") is None  # warm-up: no game, no margin
            expected = 3.0 if extra else 1.5 * rows[0]["kl_real"]  # auto: 1.5x the (averaged) kl_real so far
            assert rows[1]["margin"] == pytest.approx(expected, rel=1.0 if not extra else 1e-6)
            assert rows[1]["margin"] > 0
        model, loaded = load_run(out)
        again = evaluate(model, loaded)
        assert loaded == cfg and {k: again[k] for k in ("kl", "jsd", "kl_textbook", "jsd_textbook")} == pytest.approx(
            {k: result[k] for k in ("kl", "jsd", "kl_textbook", "jsd_textbook")})
        # the scores over several draws: draw 0 is the single score, and the mean and sd are those of the draws
        d = result["draws"]
        assert d["n"] == cfg.score_draws == 3 and d == again["draws"]
        singles = [evaluate(model, dataclasses.replace(loaded, score_draws=1), seed=k)["kl"] for k in range(3)]
        assert singles[0] == pytest.approx(result["kl"]) and d["kl"][0] == pytest.approx(np.mean(singles))
        assert d["kl"][1] == pytest.approx(np.std(singles, ddof=1)) and d["kl"][1] > 0
        assert result["networks"] == "MLPs with 4 ReLU layers of 256 (the authors'), z = 2"
    # a run of the earlier networks (one hidden layer fewer in each MLP) is refused with one line
    state = torch.load(out / "model.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if ".6." not in k and not k.startswith("decoder.6")}, out / "model.pt")
    with pytest.raises(UserError, match="earlier 2D networks"):
        load_run(out)
    # the authors' weights are the defaults; IntroVAE's margin is auto unless given
    assert (ToyConfig(density="checkerboard").beta_kl, ToyConfig(density="checkerboard").beta_neg) == (0.1, 0.2)
    assert ToyConfig(objective="introvae").margin == "auto"
    for bad in (-1.0, "big", float("nan")):
        with pytest.raises(ConfigError, match="^margin"):
            ToyConfig(objective="introvae", margin=bad)
    with pytest.raises(ConfigError, match="^density"):
        ToyConfig(density="moons")
    with pytest.raises(ConfigError, match="^precision"):
        ToyConfig(precision="fp16")


@pytest.mark.slow
def test_a_few_hundred_vae_steps_already_move_towards_the_data(tmp_path):
    torch.manual_seed(0)
    # rings, not 8gaussians: a blurry early VAE misses the 8 narrow modes' bins entirely (JSD stays log 2)
    cfg = ToyConfig(density="rings", objective="vae", steps=200, batch_size=128, lr=1e-3, log_every=100,
                    eval_points=2000)
    untrained = evaluate(ToyVAE(), cfg)["jsd_textbook"]
    trained = train(cfg, tmp_path / "run", progress=False)["jsd_textbook"]
    assert trained < 0.9 * untrained, (trained, untrained)  # 300 steps of 256: 0.51 against 0.69


def test_the_command_line_trains_and_evaluates_a_2d_run(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["train", "--data", "8gaussians", "--objective", "soft-introvae", "--steps", "6", "--vae-steps",
                 "2", "--batch-size", "32", "--log-every", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "JSD" in printed and "density.png" in printed
    assert main(["evaluate", str(out)]) == 0
    assert "JSD" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--seed", "1", "-o", str(tmp_path / "scored")]) == 0  # -o: the scores kept
    written = json.loads((tmp_path / "scored" / "scores.json").read_text())
    assert written["seed"] == 1 and f"{written['jsd']:.4f}"[:4] in capsys.readouterr().out
    assert written["kl"] != json.loads((out / "scores.json").read_text())["kl"]  # another draw; the run's stays
    assert main(["train", "--data", "rings", "--steps", "6", "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--image-size" in err and "2D density" in err
    # sample draws the model's points: a table, an array, their histogram; the same seed, the same points
    for name in ("a.csv", "b.npy", "c.png"):
        assert main(["sample", str(out), "-n", "50", "--seed", "4", "-o", str(tmp_path / name)]) == 0
    assert "wrote 50 points of the soft-introvae of 8gaussians" in capsys.readouterr().out
    table = np.loadtxt(tmp_path / "a.csv", delimiter=",", skiprows=1)
    model, _ = load_run(out)
    assert table.shape == (50, 2) and np.allclose(table, model.sample(50, seed=4).numpy(), atol=1e-6)
    assert np.allclose(np.load(tmp_path / "b.npy"), table, atol=1e-6) and (tmp_path / "c.png").stat().st_size > 0
    assert main(["sample", str(out), "-n", "5", "-o", str(tmp_path / "d.webp")]) == 2
    assert "a 2D run's samples are points; give a .csv, .npy or .png file" in capsys.readouterr().err
    # the image commands name what a 2D run takes
    assert main(["reconstruct", str(out), str(tmp_path / "c.png"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a 2D density run, not an image model" in err and "introvae sample" in err


@pytest.mark.parametrize("objective", ["introvae", "soft-introvae"])
def test_a_stopped_2d_run_resumes_exactly(tmp_path, monkeypatch, objective):
    """SIGTERM in the middle of a 2D run: it stops after that step with a checkpoint, and the same call goes on to
    the weights, stats rows and scores of a run never stopped (IntroVAE with its automatic margin's state)."""
    import os
    import signal

    from introvae.toy2d import run as toyrun

    cfg = ToyConfig(density="rings", objective=objective, steps=12, vae_steps=4, batch_size=64, log_every=2,
                    checkpoint_every=5, eval_points=500, score_draws=2)
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert not (tmp_path / "whole" / "checkpoint.pt").exists()  # gone once the run is finished

    draws = []
    real_sample = toyrun.sample

    def killed_at_the_seventh_batch(*a, **kw):
        draws.append(1)
        if len(draws) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_sample(*a, **kw)

    monkeypatch.setattr(toyrun, "sample", killed_at_the_seventh_batch)
    old = signal.getsignal(signal.SIGTERM)
    with pytest.raises(UserError, match="interrupted at step 7 of 12.*the same command resumes") as stopped:
        train(cfg, tmp_path / "run", progress=False)
    assert stopped.value.status == 130 and signal.getsignal(signal.SIGTERM) == old
    kept = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert kept["step"] == 7 and kept["seconds"] > 0
    monkeypatch.setattr(toyrun, "sample", real_sample)
    said = []
    resumed = train(cfg, tmp_path / "run", progress=False, log=said.append)
    assert said == [f"resuming {tmp_path / 'run'} at step 7 of 12"]
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "run" / "stats.jsonl").read_text() == (tmp_path / "whole" / "stats.jsonl").read_text()
    assert {k: resumed[k] for k in ("kl", "jsd")} == {k: whole[k] for k in ("kl", "jsd")}
    assert resumed["resumed_at"] == 7 and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert resumed["seconds"] > kept["seconds"]  # the training time of both calls


def test_a_2d_run_resumes_from_its_last_checkpoint_and_refuses_other_settings(tmp_path, capsys):
    """A run killed outright keeps its last periodic checkpoint; `train --resume RUN` goes on from it, and the same
    directory with other settings is refused in one line."""
    cfg = ToyConfig(density="8gaussians", objective="vae", steps=8, batch_size=32, log_every=2, checkpoint_every=3,
                    eval_points=300, score_draws=1)
    whole = train(cfg, tmp_path / "whole", progress=False)
    out = tmp_path / "run"
    with pytest.raises(SystemExit), a_2d_run_killed_after_checkpoint(6) as saved:
        train(cfg, out, progress=False)
    assert saved == [3, 6]
    with pytest.raises(UserError, match="holds an unfinished 2D run with steps 8, not 9"):
        train(dataclasses.replace(cfg, steps=9), out, progress=False)
    assert main(["train", "--resume", str(out), "--steps", "9"]) == 2
    assert "--steps cannot change when a 2D run resumes" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--log-every", "2", "--quiet"]) == 0
    assert f"resuming {out} at step 6 of 8" in capsys.readouterr().out
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "scores.json").read_text())["kl"] == whole["kl"]
    assert [s["step"] for s in read_sessions(out)] == [0, 6]  # where each stretch trained (refused calls: none)
    assert main(["train", "--resume", str(out), "--quiet"]) == 2  # finished: nothing to resume, nothing overwritten
    assert "already holds a finished 2D run" in capsys.readouterr().err


def test_a_2d_dry_run_prints_its_settings_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "rings", "--objective", "soft-introvae", "--steps", "6", "--seed", "3",
                 "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    settings = json.loads(printed[:printed.rindex("}") + 1])
    assert (settings["density"], settings["objective"], settings["steps"], settings["seed"]) == ("rings",
                                                                                             "soft-introvae", 6, 3)
    assert "would train a soft-introvae of rings (MLPs, z = 2) for 6 steps" in printed and not out.exists()
    assert "the VAE warm-up (2000 steps) covers the whole run (6 steps)" in printed  # the default warm-up, said
    for objective, vae_steps, warned in (("introvae", "2", False), ("vae", "2000", False), ("introvae", "6", True)):
        assert main(["train", "--data", "rings", "--objective", objective, "--steps", "6", "--vae-steps", vae_steps,
                     "--dry-run", "--out", str(out)]) == 0
        assert ("covers the whole run" in capsys.readouterr().out) == warned, (objective, vae_steps)
