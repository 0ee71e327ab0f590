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
from introvae.config import flat_fields
from introvae.data import DataError, load
from introvae.errors import UserError
from introvae.stats import read_stats
from introvae.trainer import Trainer, resume

from conftest import tiny_config, write_pngs

TINY = {"image_size": 16, "in_channels": 1, "latent_dim": 8, "channels": [4, 8, 8], "batch_size": 4,
        "log_every": 1, "image_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 2, "margin": 5,
        "grid_size": 4, "holdout_fraction": 0.0}


def _quiet(tmp, data, **kw):
    return Trainer(tiny_config(**kw), tmp, data=data, show_progress=False, log=lambda s: None)


# --- kills -----------------------------------------------------------------------------
def _cli(args: list[str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "introvae", *args], env=env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def _newest_step(run: Path) -> int:
    found = checkpoint.list_checkpoints(run)
    return int(found[-1].stem.split("-")[1]) if found else -1


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_the_pictures_and_exits_saying_it_stopped(tmp_path):
    write_pngs(tmp_path / "imgs", 24, mode="L")
    cfg = dict(TINY, checkpoint_every=1000)
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    proc = _cli(["train", "--data", str(tmp_path / "imgs"), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "100000", "--out", str(tmp_path / "run"), "--quiet"], stdout=subprocess.PIPE)
    deadline = time.time() + 60
    while not read_stats(tmp_path / "run") and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3  # stopped before its end: not 0, so that scripts can tell
    step = _newest_step(tmp_path / "run")
    assert step > 0 and step != 1000  # a checkpoint of the step it stopped at, not of a schedule
    assert f"stopped at step {step} of 100000" in proc.stdout.read()
    for picture in (f"samples-{step:09d}.png", f"reconstructions-{step:09d}.png", "kl.png"):
        assert (tmp_path / "run" / picture).is_file(), picture  # the pictures of where it stopped


# --- divergence guard --------------------------------------------------------------------
def _poison(monkeypatch, calls: set[int]):
    """Make the batches of the given (1-based) batch draws all-NaN, as they reach the device (batches travel as
    uint8, which holds no NaN: the poison goes in where they become floats)."""
    real, count = trainer_mod.to_device, [0]

    def to_device(*a, **k):
        x = real(*a, **k)
        count[0] += 1
        return torch.full_like(x, float("nan")) if count[0] in calls else x

    monkeypatch.setattr(trainer_mod, "to_device", to_device)


def test_a_nan_step_is_skipped_and_counted(tmp_path, faces16, monkeypatch):
    _poison(monkeypatch, {3})
    t = _quiet(tmp_path / "r", faces16, steps=6)
    t.train()
    rows = read_stats(tmp_path / "r")
    assert sum(r["skipped_steps"] for r in rows) == 1 and rows[-1]["rollbacks"] == 0
    assert t.run.weights_finite() and t.step == 6


def test_consecutive_nan_steps_roll_back_and_lower_the_learning_rate(tmp_path, faces16, monkeypatch):
    _poison(monkeypatch, {5, 6, 7})
    messages = []
    t = Trainer(tiny_config(steps=8, checkpoint_every=3, max_bad_steps=3), tmp_path / "r", data=faces16,
                show_progress=False, log=messages.append)
    t.train()
    assert t.run.rollbacks == 1 and t.step == 8 and t.run.weights_finite()
    assert t.run.optimizers["encoder"].param_groups[0]["lr"] == t.run.optimizers["decoder"].param_groups[0]["lr"] == 1e-4
    # skipped steps leave the weights as they were, so the step-6 checkpoint is a good one
    assert any("rolled back to step-000000006.pt" in m and "learning rate to 0.0001" in m for m in messages)
    rows = read_stats(tmp_path / "r")
    assert [r["step"] for r in rows] == [2, 4, 6, 8] and rows[-1]["rollbacks"] == 1 and rows[-1]["lr"] == 1e-4
    state = checkpoint.load(checkpoint.latest(tmp_path / "r"))
    assert state["optimizers"]["encoder"]["param_groups"][0]["lr"] == 1e-4  # the lower rate survives a resume


def test_non_finite_weights_are_never_checkpointed(tmp_path, faces16):
    t = _quiet(tmp_path / "r", faces16, steps=4)
    t.train(stop_after=2)
    with torch.no_grad():
        next(t.run.model.parameters()).fill_(float("inf"))
    t.run.step = 3
    assert t.save_checkpoint() is False
    assert t.run.weights_finite() and t.step == 2  # rolled back to the last good checkpoint instead
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
    with pytest.raises(UserError, match="could not write the checkpoint of step 6.*step-000000002.pt, is intact"):
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
# Each flag gets values that run (tiny networks, at most 2 steps) and values that must fail with one line;
# four in five draws are of the first kind, so that about half of the command lines train for real.
FLAG_VALUES = {  # flag: (values that run, values that fail)
    "--image-size": (["16"], ["48", "2048", "32"]), "--latent-dim": (["1", "3", "8"], ["0", "2.5"]),
    "--channels": (["4,8,8", "2,2,2,2,2"], ["4;8", "4,-8,8", "8"]), "--in-channels": (["1", "3"], ["2"]),
    "--margin": (["0", "5", "1e6", "auto"], ["-3", "nan", "automatic"]), "--alpha": (["0", "0.25", "3"], ["-1"]),
    "--beta": (["0.5", "2", "1e-9"], ["0", "inf"]), "--batch-size": (["2", "3", "4"], ["1", "200"]),
    "--steps": (["1", "2"], ["0", "two"]), "--epochs": (["0.05", "0.1"], ["-2", "1e309"]),
    "--vae-steps": (["0", "1", "5"], ["-1"]), "--seed": (["0", "7", "-4"], ["x"]),
    "--lr": (["1e-3", "1e30"], ["-1", "0"]), "--objective": (["vae", "introvae"], ["gan"]),
    "--preset": (["faces", "celeba128", "rgb64"], ["nope"]), "--data": (["faces", "IMAGES"], ["/no/where", ""]),
    "--device": (["cpu"], ["cuda", "cuda:3", "tpu"]), "--precision": (["fp32", "bf16"], ["fp8"]),
    "--holdout-fraction": (["0", "0.5"], ["1"]), "--ema": (["0", "0.9"], ["1"]),
    "--keep-checkpoints": (["1", "2"], ["0"]), "--max-bad-steps": (["1", "3"], ["0"]),
    "--grid-size": (["2", "3"], ["0"]), "--channels-last": ([""], []), "--no-compile": ([""], []),
}
ARGS = st.lists(st.sampled_from(sorted(FLAG_VALUES)).flatmap(lambda f: st.tuples(st.just(f), st.one_of(
    *[st.sampled_from(FLAG_VALUES[f][0])] * (4 if FLAG_VALUES[f][1] else 1),
    *([st.sampled_from(FLAG_VALUES[f][1])] if FLAG_VALUES[f][1] else [])))), max_size=4)


@pytest.fixture(scope="module")
def tiny_cli_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("random-cli")
    write_pngs(d / "imgs", 10, mode="L")
    (d / "tiny.json").write_text(json.dumps({**TINY, "data": "faces", "log_every": 1, "checkpoint_every": 1}))
    return d


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGS)
def test_random_train_arguments_give_a_run_or_one_clean_error(capsys, tiny_cli_setup, pairs):
    """Real short runs (at most 2 steps of tiny networks), not only --dry-run: every random command line
    either trains and leaves a run with its last checkpoint, or fails with one line and status 2."""
    d = tiny_cli_setup
    out = d / f"run-{len(list(d.iterdir()))}"
    tokens = [tok for flag, v in pairs for tok in (flag, v.replace("IMAGES", str(d / "imgs"))) if tok != ""
              or flag in ("--data",)]
    if "--steps" not in tokens and "--epochs" not in tokens:
        tokens += ["--steps", "2"]
    argv = ["train", "--config", str(d / "tiny.json"), "--out", str(out), "--quiet", *tokens]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc in (0, 2), shlex.join(argv)
    if rc == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("introvae: error:"), (argv, captured.err)
    else:
        state = checkpoint.load(checkpoint.latest(out))
        assert state["step"] == state["total_steps"] >= 1, argv
        assert (out / "kl.png").is_file() and read_stats(out)[-1]["step"] == state["step"]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in flat_fields()]), st.one_of(
    st.integers(-3, 5000), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none(),
    st.lists(st.integers(-2, 64), max_size=10))))
def test_random_config_dicts_build_or_fail_naming_a_field(d):
    from introvae import ConfigError, TrainConfig

    try:
        cfg = TrainConfig.from_dict(d)
    except ConfigError as e:
        field = str(e).split(":")[0]
        assert field in {f.name for f in flat_fields()} or field.startswith("unknown"), str(e)
    else:
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# --- rollback, kill, resume -------------------------------------------------------------------
class Killed(Exception):
    """Stands for SIGKILL: the run stops between two steps and writes nothing more."""


def _faulty(trainer, *, nan_steps=(), inf_weights_at=None, kill_at=None):
    """Wrap ``trainer``'s step: the steps numbered in ``nan_steps`` get a NaN batch and the weights turn
    infinite after step ``inf_weights_at`` (both only before the first rollback, as a transient fault would);
    ``kill_at`` = (step, rollbacks) kills the run just before that step."""
    real, run = trainer.train_step, trainer.run

    def step(objective, x):
        n = run.step + 1  # the step about to be computed
        if kill_at == (n, run.rollbacks):
            raise Killed
        if run.rollbacks == 0 and n in nan_steps:
            x = torch.full_like(x, float("nan"))
        out = real(objective, x)
        if run.rollbacks == 0 and n == inf_weights_at:
            with torch.no_grad():
                run.model.decoder.to_image.weight.fill_(float("inf"))
        return out

    trainer.train_step = step
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["nan-batches", "inf-weights"])
def test_a_run_with_a_rollback_killed_and_resumed_ends_bit_identical(tmp_path, faces16, fault):
    """A rollback comes from the guard (three NaN batches in a row) or from a checkpoint that finds non-finite
    weights. It restarts the batches at the restored data cursor and checkpoints the new state at once, so a run
    killed before the rollback, and again just after it, ends with exactly the weights of a run never killed."""
    kw = dict(steps=14, checkpoint_every=4, log_every=2, max_bad_steps=3 if fault == "nan-batches" else 100)
    fault_kw = {"nan_steps": (6, 7, 8)} if fault == "nan-batches" else {"inf_weights_at": 9}
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)

    straight = _faulty(Trainer(tiny_config(**kw), tmp_path / "a", **quiet), **fault_kw)
    straight.train()
    assert straight.run.rollbacks == 1 and straight.step == 14
    rolled_back_to = 4 if fault == "nan-batches" else 8

    run = tmp_path / "b"
    with pytest.raises(Killed):  # killed in the middle of the fault, before the rollback
        _faulty(Trainer(tiny_config(**kw), run, **quiet), **fault_kw, kill_at=(rolled_back_to + 3, 0)).train()
    with pytest.raises(Killed):  # killed at the first step after the rollback
        _faulty(resume(run, **quiet), **fault_kw, kill_at=(rolled_back_to + 1, 1)).train()
    assert checkpoint.load(checkpoint.latest(run))["rollbacks"] == 1  # the rollback was checkpointed
    last = _faulty(resume(run, **quiet), **fault_kw)
    assert last.step == rolled_back_to and last.run.lr == 1e-4
    last.train()

    a, b = straight.run.model.state_dict(), last.run.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a, rows_b = read_stats(tmp_path / "a"), read_stats(run)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == list(range(2, 15, 2))
    assert [r["loss_encoder"] for r in rows_a] == [r["loss_encoder"] for r in rows_b]


def test_resume_may_change_runtime_settings_and_extend_a_finished_run_but_not_the_model(tmp_path, faces16, capsys):
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    Trainer(tiny_config(steps=4), tmp_path / "r", **quiet).train()
    with pytest.raises(UserError, match=r"^latent_dim: a resumed run keeps its value \(8\)"):
        resume(tmp_path / "r", {"latent_dim": 9}, **quiet)
    with pytest.raises(UserError, match=r"^margin: a resumed run keeps its value"):
        resume(tmp_path / "r", {"margin": 9.0}, **quiet)
    with pytest.raises(UserError, match="^steps: the run is at step 4 already"):
        resume(tmp_path / "r", {"steps": 3}, **quiet)
    r = resume(tmp_path / "r", {"steps": 7, "precision": "bf16", "loader_workers": 1, "log_every": 1,
                                "device": "cpu", "checkpoint_minutes": 1.0}, **quiet)
    assert (r.step, r.run.total_steps, r.run.precision.name) == (4, 7, "bf16")
    r.train()
    assert r.step == 7 and checkpoint.load(checkpoint.latest(tmp_path / "r"))["step"] == 7
    changes = [json.loads(ln) for ln in (tmp_path / "r" / "changes.jsonl").read_text().splitlines()]
    assert {(c["field"], c["from"], c["to"], c["step"]) for c in changes} == {
        ("steps", 4, 7, 4), ("precision", "fp32", "bf16", 4), ("loader_workers", -1, 1, 4), ("log_every", 2, 1, 4),
        ("checkpoint_minutes", 5.0, 1.0, 4)}
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["steps"], saved["precision"]) == (7, "bf16")
    assert [row["step"] for row in read_stats(tmp_path / "r")] == [2, 4, 5, 6, 7]
    # the same through the command line, with one line for a field that may not change
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "8", "--quiet", "--no-channels-last"]) == 0
    assert checkpoint.load(checkpoint.latest(tmp_path / "r"))["step"] == 8
    capsys.readouterr()  # what that run said (on a CPU without native bf16, a warning that bf16 is emulated)
    assert main(["train", "--resume", str(tmp_path / "r"), "--beta", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("introvae: error: beta: a resumed run keeps its value")


def _weights(run_dir, step):
    return checkpoint.load(checkpoint.checkpoint_path(run_dir, step))["model"]


def test_a_fork_without_changes_trains_exactly_as_its_source_and_with_changes_differs(tmp_path, faces16):
    """A fork of the step-3 checkpoint reaches the source's step-6 weights to the bit (weights, optimiser
    moments, data order and random state all carried over); with other alpha, lr and margin it records them,
    trains with them from its first step, and leaves the source as it was."""
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    Trainer(tiny_config(steps=6, checkpoint_every=3), tmp_path / "a", **quiet).train()
    source = checkpoint.checkpoint_path(tmp_path / "a", 3)
    before = source.read_bytes()

    same = trainer_mod.fork(source, tmp_path / "b", **quiet)
    assert same.step == 3 and same.run.total_steps == 6
    same.train()
    expected, got = _weights(tmp_path / "a", 6), _weights(tmp_path / "b", 6)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert [row["step"] for row in read_stats(tmp_path / "b")] == [4, 6]  # the fork's own steps only

    other = trainer_mod.fork(tmp_path / "a" / "checkpoints" / source.name, tmp_path / "c",
                             {"alpha": 0.6, "lr": 1e-3, "margin": 7.0, "steps": 5}, **quiet)
    assert (other.config.alpha, other.config.margin, other.run.lr, other.run.total_steps) == (0.6, 7.0, 1e-3, 5)
    other.train()
    changes = [json.loads(ln) for ln in (tmp_path / "c" / "changes.jsonl").read_text().splitlines()]
    assert [(c["field"], c["from"], c["to"], c["step"]) for c in changes] == [
        ("forked_from", None, str(source.resolve()), 3), ("margin", 5.0, 7.0, 3), ("alpha", 0.25, 0.6, 3), ("lr", 2e-4, 1e-3, 3),
        ("steps", 6, 5, 3)]
    assert json.loads((tmp_path / "c" / "config.json").read_text())["alpha"] == 0.6
    w5 = _weights(tmp_path / "c", 5)
    assert not all(torch.equal(w5[k], expected[k]) for k in w5 if w5[k].is_floating_point())
    assert source.read_bytes() == before and not (tmp_path / "a" / "changes.jsonl").exists()


def test_a_fork_with_another_batch_keeps_the_length_the_cursor_and_the_rate_in_images(tmp_path, faces16):
    """80 training images, a batch of 4 for one epoch (20 steps); forked at step 10 (40 images) with a batch of 8,
    the run still ends after 80 images (15 steps), the rate is the one of 40 images seen, and --epochs (on the fork,
    then on its resume) counts epochs from the data cursor, not in steps of the new batch from step 0."""
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    cfg = tiny_config(steps=None, epochs=1.0, checkpoint_every=5, lr=1e-3, lr_half_life=0.5, lr_decay_start=0.25)
    Trainer(cfg, tmp_path / "a", **quiet).train()
    half = checkpoint.checkpoint_path(tmp_path / "a", 10)

    said = []
    f = trainer_mod.fork(half, tmp_path / "f", {"batch_size": 8}, data=faces16, show_progress=False, log=said.append)
    assert (f.step, f.run.total_steps, f.run.global_batch) == (10, 15, 8)
    assert f.run.scheduled_lr() == pytest.approx(1e-3 * 0.5 ** 0.5)  # 0.5 epochs seen: 0.25 past the decay's start
    assert "a batch of 8 instead of 4: the run's length, warm-up and rate schedule stay where they were in images " \
           "seen" in said and "from step 10 of 15; batch_size: 4 -> 8" in said[-1], said
    f.train()
    assert (f.step, f.run.epoch, f.run.epoch_images) == (15, 1, 0)  # 40 + 5 x 8 = 80 images: one epoch
    assert json.loads((tmp_path / "f" / "config.json").read_text())["batch_size"] == 8

    g = trainer_mod.fork(half, tmp_path / "g", {"batch_size": 8, "epochs": 2.0}, **quiet)
    assert g.run.total_steps == 25  # 40 + 15 x 8 = 160 images (10 steps of 8 from step 0 would give 20)
    g.train()
    assert (g.step, g.run.epoch, g.run.epoch_images) == (25, 2, 0)
    longer = resume(tmp_path / "g", {"epochs": 3.0}, **quiet)
    assert longer.run.total_steps == 35  # one more epoch of 10 steps of 8 (3 x 10 = 30 would be 40 images short)

    # forked where a larger batch no longer fits the epoch's rest (60 of 80 used, batch 24): the next epoch starts
    late = trainer_mod.fork(checkpoint.checkpoint_path(tmp_path / "a", 15), tmp_path / "h", {"batch_size": 24},
                            **quiet)
    assert (late.run.epoch, late.run.epoch_images, late.run.total_steps) == (1, 0, 16)
    late.train()
    assert (late.step, late.run.epoch, late.run.epoch_images) == (16, 1, 24)


def test_a_fork_refuses_what_would_make_it_another_run_in_one_line(tmp_path, faces16, capsys):
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    Trainer(tiny_config(steps=4), tmp_path / "a", **quiet).train()
    for field, value in (("latent_dim", 9), ("adam_beta1", 0.6), ("seed", 1), ("objective", "vae"),
                         ("alpha_early", 0.1)):
        with pytest.raises(UserError, match=rf"^{field}: a fork keeps its source's value"):
            trainer_mod.fork(tmp_path / "a", tmp_path / "f", {field: value, "steps": 6}, **quiet)
    with pytest.raises(UserError, match="^margin: a fork may fix the margin at a number but not start"):
        trainer_mod.fork(tmp_path / "a", tmp_path / "f", {"margin": "auto", "steps": 6}, **quiet)
    with pytest.raises(UserError, match="^steps: the source is at step 4 of its 4"):
        trainer_mod.fork(tmp_path / "a", tmp_path / "f", {"alpha": 0.5}, **quiet)
    with pytest.raises(UserError, match="^--fork: not found"):
        trainer_mod.fork(tmp_path / "nothing", tmp_path / "f", **quiet)

    # the command line: a fork runs, and each misuse is one line
    assert main(["train", "--fork", str(tmp_path / "a"), "--beta", "2", "--generated-norm", "real", "--steps", "5",
                 "--out", str(tmp_path / "g"), "--quiet", "--no-channels-last"]) == 0
    forked = checkpoint.load(checkpoint.latest(tmp_path / "g"))["config"]
    assert (forked["beta"], forked["generated_norm"]) == (2.0, "real")
    capsys.readouterr()
    for argv, says in ((["--fork", str(tmp_path / "a"), "--steps", "6"], "--fork needs --out"),
                       (["--fork", str(tmp_path / "a"), "--resume", str(tmp_path / "a")], "give one"),
                       (["--fork", str(tmp_path / "a"), "--preset", "faces", "--out", str(tmp_path / "h")],
                        "give no --data, --preset or --config"),
                       (["--fork", str(tmp_path / "a"), "--steps", "6", "--out", str(tmp_path / "g")],
                        "already holds a run"),
                       (["--fork", str(tmp_path / "a"), "--latent-dim", "4", "--steps", "6", "--out",
                         str(tmp_path / "h")], "latent_dim: a fork keeps its source's value (8)")):
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err


def test_dry_runs_of_a_resume_and_a_fork_print_the_plan_and_train_nothing(tmp_path, faces16, capsys):
    Trainer(tiny_config(steps=4), tmp_path / "a", data=faces16, show_progress=False, log=lambda s: None).train()
    before = sorted(p.name for p in (tmp_path / "a").rglob("*"))
    capsys.readouterr()
    assert main(["train", "--fork", str(tmp_path / "a"), "--alpha", "0.6", "--lr-decay-start", "0.5", "--steps", "6",
                 "--out", str(tmp_path / "f"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1])["alpha"] == 0.6
    assert "would fork" in out and "from step 4" in out and "alpha: 0.25 -> 0.6" in out
    assert "lr_decay_start: 0.0 -> 0.5" in out and not (tmp_path / "f").exists()
    assert main(["train", "--resume", str(tmp_path / "a"), "--steps", "6", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would resume" in out and "steps: 4 -> 6" in out
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == before  # no step, no changes.jsonl


def test_a_checkpoint_of_another_architecture_is_a_clean_cli_error(tmp_path, faces16, capsys):
    t = _quiet(tmp_path / "r", faces16, steps=1)
    t.train()
    path = checkpoint.latest(tmp_path / "r")
    state = checkpoint.load(path)
    state["config"]["model"]["latent_dim"] = 9  # a config that does not fit the stored weights
    torch.save(state, path)
    assert main(["sample", str(tmp_path / "r"), "-n", "2", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not fit this architecture" in err
