"""introvae info: a run's progress, last log, time per machine and evaluations, read from its files."""

from __future__ import annotations

import json

import pytest

from conftest import a_2d_run_killed_after_checkpoint, tiny_config
from introvae.cli import main
from introvae.info import summarize
from introvae.metrics.store import append_metrics
from introvae.provenance import machine, machine_words


def test_info_says_how_far_a_run_is_where_it_trained_and_what_it_scored(tmp_path, capsys):
    run = tmp_path / "run"
    from introvae.trainer import Trainer, resume

    Trainer(tiny_config(steps=4), run, show_progress=False, log=lambda s: None).train(stop_after=2)
    s = summarize(run)
    assert (s["step"], s["total_steps"], s["finished"], s["objective"], s["data"]) == (2, 4, False, "introvae", "faces")
    assert s["sessions"] == 1 and list(s["training_seconds_by_machine"]) == [machine_words(machine())]
    assert s["last_log"]["step"] == 2 and s["last_log"]["margin"] == 5.0
    proto = {"num_samples": 500, "ref_images": 400, "ref_split": "test", "feature_precision": "fp32"}
    append_metrics(run, {"step": 2, "protocol": proto, "metrics": {
        "fid": {"value": 123.456}, "precision_recall": {"precision": 0.25, "recall": 0.125},
        "reconstruction": {"posterior_mean": {"psnr": 17.5}}}})
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"step 2 of 4; unfinished: introvae train --resume {run} (about " in out and "img/s, its last logged rate)" in out
    assert "KL real" in out and "margin 5.0" in out and machine_words(machine()) in out
    assert ("step 2: FID 123.46, precision 0.250, recall 0.125, PSNR 17.50 dB (500 samples vs 400 test images, "
            "fp32 features)") in out
    assert summarize(run / "checkpoints" / "step-000000002.pt")["step"] == 2  # a checkpoint stands for its run
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"][0]["fid"] == 123.456
    # resumed to its end: finished, two training calls
    resume(run, show_progress=False, log=lambda s: None).train()
    s = summarize(run)
    assert (s["step"], s["finished"], s["sessions"], s["last_session"]["step"]) == (4, True, 2, 2)
    assert s["pictures"] == [str(run / "samples-000000004.png"), str(run / "reconstructions-000000004.png"),
                             str(run / "kl.png")]  # the newest grids, and Fig. 5
    assert main(["info", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    # several at once: each in turn; a bad one is named and does not hide the others (status 2)
    assert main(["info", str(run), str(tmp_path / "gone"), str(run / "checkpoints" / "step-000000004.pt")]) == 2
    out, err = capsys.readouterr()
    assert out.count("step 4 of 4; finished") == 2 and "gone does not exist" in err
    assert main(["info", str(run), str(run), "--json"]) == 0
    assert [s["step"] for s in json.loads(capsys.readouterr().out)] == [4, 4]


def test_info_names_a_forks_source_and_the_settings_it_and_each_resume_changed(tmp_path, capsys):
    from introvae.provenance import training_seconds
    from introvae.trainer import Trainer, fork, resume

    quiet = dict(show_progress=False, log=lambda s: None)
    Trainer(tiny_config(steps=2), tmp_path / "a", **quiet).train()
    fork(tmp_path / "a", tmp_path / "f", {"generated_norm": "real", "steps": 3}, **quiet).train()
    resume(tmp_path / "f", {"steps": 4}, **quiet).train()
    s = summarize(tmp_path / "f")
    assert s["forked_from"]["step"] == 2
    source_seconds = summarize(tmp_path / "a")["training_seconds"]  # the fork's total counts its source's, said so
    assert s["forked_from"]["training_seconds"] == pytest.approx(source_seconds, abs=0.1)
    # the fork's own steps add time; the summary rounds to 0.1 s, under which two tiny steps can vanish on a fast
    # CPU (CI failed so, 0.1 > 0.1), so the strict order is asserted on the unrounded times
    assert s["training_seconds"] >= s["forked_from"]["training_seconds"]
    assert training_seconds(tmp_path / "f") > training_seconds(tmp_path / "a")
    assert [(c["step"], c["field"], c["from"], c["to"]) for c in s["changes"]] == [
        (2, "generated_norm", "batch", "real"), (2, "steps", 2, 3), (3, "steps", 3, 4)]
    assert main(["info", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "changed      at step 2: generated_norm batch -> real; steps 2 -> 3\n" in out
    assert "changed      at step 3: steps 3 -> 4" in out
    assert "of it in its source, before the fork): " in out


def test_info_counts_a_forks_epochs_from_the_data_cursor_when_its_batch_changed(tmp_path, capsys, faces16):
    """80 images, a batch of 4 for one epoch (20 steps), forked at step 10 with a batch of 8 (5 steps to the end)
    and stopped at step 13: 40 + 3 x 8 = 64 images, 0.8 epochs, not 13 / 15 of one (0.9)."""
    from introvae import checkpoint
    from introvae.trainer import Trainer, fork

    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    Trainer(tiny_config(steps=None, epochs=1.0, checkpoint_every=5), tmp_path / "a", **quiet).train()
    f = fork(checkpoint.checkpoint_path(tmp_path / "a", 10), tmp_path / "f", {"batch_size": 8}, **quiet)
    f.train(stop_after=13)
    s = summarize(tmp_path / "f")
    assert (s["step"], s["total_steps"], s["epochs_seen"]) == (13, 15, pytest.approx(0.8))
    assert main(["info", str(tmp_path / "f")]) == 0
    assert "step 13 of 15 (0.8 of 1 epochs); unfinished" in capsys.readouterr().out


def test_info_reads_a_2d_run_stopped_and_finished(tmp_path, capsys):
    from introvae.toy2d import ToyConfig
    from introvae.toy2d import train as train_2d

    cfg = ToyConfig(density="8gaussians", objective="vae", steps=8, batch_size=32, log_every=2, checkpoint_every=3,
                    eval_points=300, score_draws=1)
    out = tmp_path / "run"
    with pytest.raises(SystemExit), a_2d_run_killed_after_checkpoint(6):
        train_2d(cfg, out, progress=False)
    s = summarize(out)
    assert (s["finished"], s["checkpoint"], s["step"], s["total_steps"]) == (False, True, 6, 8)
    scores = train_2d(cfg, out, progress=False)
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "VAE on 8gaussians, seed 0" in printed and "step 8 of 8; finished" in printed
    assert f"JSD {scores['jsd']:.3f}" in printed


def test_the_time_left_is_the_median_of_the_last_rates_of_the_same_kind_of_step():
    from introvae.eta import INTROSPECTIVE_COST
    from introvae.info import _seconds_left

    rows = [{"step": 2, "images_per_s": 10.0}, {"step": 4, "images_per_s": 40.0}, {"step": 6, "images_per_s": 20.0},
            {"step": 8, "images_per_s": 30.0}]
    # past a warm-up of 4 steps: the rows after it (20, 30: median 25); 2 steps of 4 images left
    assert _seconds_left(rows, 8, 10, 4, 4) == (2 * 4 / 25.0, 25.0)
    # in a warm-up of 8 steps: its rows (median 25); the 2 introspective steps cost INTROSPECTIVE_COST each
    assert _seconds_left(rows, 6, 10, 8, 4) == ((2 + INTROSPECTIVE_COST * 2) * 4 / 25.0, 25.0)
    assert _seconds_left([{"step": 2}], 2, 10, 0, 4) is None  # nothing timed yet


def test_a_compare_folders_unfinished_runs_say_their_time_left_in_the_same_words_as_a_run():
    from introvae.info import _format_compare

    s = {"compare_folder": "cmp", "table": "", "runs": [
        {"run": "cmp/introvae-s0", "objective": "introvae", "step": 40, "seconds_left": 600.0},
        {"run": "cmp/vae-s0", "objective": "vae", "step": 10, "seconds_left": 5 * 3600.0},
        {"run": "cmp/soft-introvae-s0", "objective": "soft-introvae"}]}
    lines = _format_compare(s).splitlines()[1:]
    assert lines[0].endswith("IntroVAE, step 40, 10 min left at its last rate")
    assert lines[1].endswith("VAE, step 10, 5.0 h left at its last rate")  # not "300 min"
    assert lines[2].endswith("Soft-IntroVAE, no readable checkpoint yet, unfinished")


def test_info_reads_a_folder_evaluate_wrote_with_an_evaluation_stopped_in_it(tmp_path, capsys):
    import torch

    from introvae.metrics.partial import PartialFeatures

    out = tmp_path / "sweep"
    proto = {"num_samples": 20, "ref_images": 30, "ref_split": "test", "feature_precision": "fp32"}
    for step, fid in ((10, 50.0), (20, 40.25)):
        append_metrics(out, {"step": step, "model": f"runs/a/checkpoints/step-{step:09d}.pt", "protocol": proto,
                             "metrics": {"fid": {"value": fid}}})
    PartialFeatures(out, "ab" * 32, 20).keep(torch.zeros(8, 4))  # 8 of 20 samples' features, then a stop
    s = summarize(out)
    assert [e["fid"] for e in s["evaluations"]] == [50.0, 40.25]
    assert s["in_progress"] == [{"file": f"sample-features-partial-{'ab' * 8}.pt", "done": 8, "total": 20}]
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 2 evaluation(s) of 2 checkpoints of runs/a" in printed
    assert "step 20: FID 40.25 (20 samples vs 30 test images, fp32 features)" in printed
    assert "sample features: 8 of 20 images so far" in printed
