"""Kills, NaNs, full disks, bad files and random command lines: no lost work, clear errors."""

from __future__ import annotations

import errno
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from introvae import checkpoint
from introvae import trainer as trainer_mod
from introvae.cli import main
from introvae.data import DataError, load
from introvae.trainer import RunError, Trainer, read_stats

from conftest import tiny_config, write_pngs

TINY = {"image_size": 16, "in_channels": 1, "latent_dim": 8, "channels": [4, 8, 8], "batch_size": 4,
        "log_every": 1, "image_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 2, "margin": 5,
        "grid_size": 4, "holdout_fraction": 0.0}


def _quiet(tmp, data, **kw):
    return Trainer(tiny_config(**kw), tmp, data=data, show_progress=False, log=lambda s: None)


# --- kills -----------------------------------------------------------------------------
def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "introvae", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _newest_step(run: Path) -> int:
    found = checkpoint.list_checkpoints(run)
    return int(found[-1].stem.split("-")[1]) if found else -1


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path):
    write_pngs(tmp_path / "imgs", 24, mode="L")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    train = ["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"),
             "--steps", "40", "--vae-steps", "5", "--quiet"]
    ref = _cli(train + ["--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=120) == 0, ref.stderr.read()

    run, rng, kills = tmp_path / "run", random.Random(0), 0
    proc = _cli(train + ["--out", str(run)])
    while True:
        # Wait for training to make progress past the last kill, then kill at a random moment.
        seen = _newest_step(run)
        deadline = time.time() + 60
        while proc.poll() is None and _newest_step(run) <= seen + 1 and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = _cli(["train", "--resume", str(run), "--quiet"])
    assert proc.returncode == 0, proc.stderr.read()
    assert kills >= 3
    a = checkpoint.load(checkpoint.latest(tmp_path / "ref"))
    b = checkpoint.load(checkpoint.latest(run))
    assert a["step"] == b["step"] == 40
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["step"] for r in read_stats(run)] == list(range(1, 41))  # no gaps, no repeats


def test_sigterm_writes_a_checkpoint_and_exits(tmp_path):
    write_pngs(tmp_path / "imgs", 24, mode="L")
    cfg = dict(TINY, checkpoint_every=1000)
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    proc = _cli(["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "100000", "--out", str(tmp_path / "run"), "--quiet"])
    deadline = time.time() + 60
    while not read_stats(tmp_path / "run") and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    step = _newest_step(tmp_path / "run")
    assert step > 0 and step != 1000  # a checkpoint of the step it stopped at, not of a schedule


# --- divergence guard --------------------------------------------------------------------
def _poison(monkeypatch, calls: set[int]):
    """Make the batches of the given (1-based) batch draws all-NaN."""
    real_batches, count = trainer_mod.batches, [0]

    def batches(*a, **k):
        for i, x in real_batches(*a, **k):
            count[0] += 1
            yield i, (torch.full_like(x, float("nan")) if count[0] in calls else x)

    monkeypatch.setattr(trainer_mod, "batches", batches)


def test_a_nan_step_is_skipped_and_counted(tmp_path, faces16, monkeypatch):
    _poison(monkeypatch, {3})
    t = _quiet(tmp_path / "r", faces16, steps=6)
    t.train()
    rows = read_stats(tmp_path / "r")
    assert sum(r["skipped_steps"] for r in rows) == 1 and rows[-1]["rollbacks"] == 0
    assert t.weights_finite() and t.step == 6


def test_consecutive_nan_steps_roll_back_and_lower_the_learning_rate(tmp_path, faces16, monkeypatch):
    _poison(monkeypatch, {5, 6, 7})
    messages = []
    t = Trainer(tiny_config(steps=8, checkpoint_every=3, max_bad_steps=3), tmp_path / "r", data=faces16,
                show_progress=False, log=messages.append)
    t.train()
    assert t.rollbacks == 1 and t.step == 8 and t.weights_finite()
    assert t.opt_e.param_groups[0]["lr"] == t.opt_g.param_groups[0]["lr"] == 1e-4
    # skipped steps leave the weights as they were, so the step-6 checkpoint is a good one
    assert any("rolled back to step-000000006.pt" in m and "learning rate to 0.0001" in m for m in messages)
    rows = read_stats(tmp_path / "r")
    assert [r["step"] for r in rows] == [2, 4, 6, 8] and rows[-1]["rollbacks"] == 1 and rows[-1]["lr"] == 1e-4
    state = checkpoint.load(checkpoint.latest(tmp_path / "r"))
    assert state["opt_e"]["param_groups"][0]["lr"] == 1e-4  # the lower rate survives a resume


def test_non_finite_weights_are_never_checkpointed(tmp_path, faces16):
    t = _quiet(tmp_path / "r", faces16, steps=4)
    t.train(stop_after=2)
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("inf"))
    t.step = 3
    assert t.save_checkpoint() is None
    assert t.weights_finite() and t.step == 2  # rolled back to the last good checkpoint instead
    assert _newest_step(tmp_path / "r") == 2


# --- disk -----------------------------------------------------------------------------------
def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, faces16, monkeypatch):
    messages = []
    t = Trainer(tiny_config(steps=6, checkpoint_every=2), tmp_path / "r", data=faces16, show_progress=False,
                log=messages.append)
    t.train(stop_after=2)
    good = checkpoint.latest(tmp_path / "r")
    before = good.read_bytes()

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(RunError, match="could not write the checkpoint of step 6.*step-000000002.pt, is intact"):
        t.train()
    assert any("No space left on device" in m and "training goes on" in m for m in messages)  # step 4
    assert checkpoint.latest(tmp_path / "r") == good and good.read_bytes() == before
    assert not list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))


# --- bad data --------------------------------------------------------------------------------
def test_every_kind_of_bad_file_is_listed_with_its_reason(tmp_path, faces16):
    d = tmp_path / "imgs"
    write_pngs(d, 6)
    (d / "zero.png").write_bytes(b"")
    (d / "text.jpg").write_text("hello")
    good = (d / "img000.png").read_bytes()
    (d / "cut.png").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (1, 1)).save(d / "tiny.png")
    Image.new("I;16", (20, 20), 4000).save(d / "deep16.png")
    Image.new("CMYK", (20, 20)).save(d / "cmyk.jpg")
    Image.new("P", (20, 20)).save(d / "palette.png")
    Image.new("LA", (20, 20)).save(d / "gray_alpha.png")
    with pytest.warns(UserWarning):
        ds = load(str(d), image_size=16, in_channels=3, holdout_fraction=0.0, show_progress=False)
    assert len(ds.train) == 10  # 6 + 16-bit + CMYK + palette + gray-alpha
    reasons = dict(ds.skipped)
    assert set(reasons) == {"zero.png", "text.jpg", "cut.png", "tiny.png"}
    assert "empty" in reasons["zero.png"] and "too small" in reasons["tiny.png"]
    t = Trainer(tiny_config(steps=1, in_channels=3), tmp_path / "run", data=ds, show_progress=False,
                log=lambda s: None)
    t.train()
    listed = (tmp_path / "run" / "bad_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(reasons)


def test_a_folder_with_no_readable_image_fails_before_any_work(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="none of the 1 images"):
        load(str(tmp_path / "d"), image_size=16, in_channels=1, show_progress=False)


# --- the command line under random input -----------------------------------------------------
FLAGS = ["--image-size", "--latent-dim", "--margin", "--alpha", "--beta", "--batch-size", "--steps", "--epochs",
         "--vae-steps", "--seed", "--lr", "--channels", "--in-channels", "--objective", "--preset", "--data"]
VALUES = st.one_of(st.integers(-5, 2000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from(["", "abc", "faces", "nan", "1e309", "4,8,8", "vae", "celeba128", "/no/where",
                                    "-1", "0", "1024", "3"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=6))
def test_random_train_arguments_give_success_or_one_clean_error(capsys, pairs):
    argv = ["train", "--dry-run"] + [tok for flag, v in pairs for tok in (flag, v)]
    if "--steps" not in argv and "--epochs" not in argv:
        argv += ["--steps", "3"]
    rc = main(argv)
    out = capsys.readouterr()
    assert rc in (0, 2), shlex.join(argv)
    if rc == 2:
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in out.err, (argv, out.err)
    else:
        json.loads(out.out[: out.out.rindex("}") + 1])  # the effective config was printed


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(list(tiny_config().to_dict())), st.one_of(
    st.integers(-3, 5000), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none(),
    st.lists(st.integers(-2, 64), max_size=10))))
def test_random_config_dicts_build_or_fail_naming_a_field(d):
    from introvae import Config, ConfigError

    try:
        cfg = Config.from_dict(d)
    except ConfigError as e:
        field = str(e).split(":")[0]
        assert field in Config.__dataclass_fields__ or field.startswith("unknown"), str(e)
    else:
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_a_checkpoint_of_another_architecture_is_a_clean_cli_error(tmp_path, faces16, capsys):
    t = _quiet(tmp_path / "r", faces16, steps=1)
    t.train()
    path = checkpoint.latest(tmp_path / "r")
    state = checkpoint.load(path)
    state["config"]["latent_dim"] = 9  # a config that does not fit the stored weights
    torch.save(state, path)
    assert main(["sample", str(tmp_path / "r"), "-n", "2", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not fit this architecture" in err
