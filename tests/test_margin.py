"""--margin auto (introvae.margin.AutoMargin): the controller's arithmetic, its place in a run, the CLI."""

import math

import pytest
import torch

from introvae.config import TrainConfig
from introvae.errors import ConfigError, UserError
from introvae.margin import DECAY, GUARD, RATIO, AutoMargin, make_margin
from introvae.objectives import IntroVAELoss, make_objective
from introvae.stats import read_stats
from introvae.trainer import Trainer, resume

from conftest import tiny_config

CPU = torch.device("cpu")


def test_before_any_step_the_margin_is_ratio_times_the_batch_kl():
    m = AutoMargin(CPU)
    assert math.isnan(m.value.item())
    assert m(torch.tensor([10.0, 20.0])).item() == pytest.approx(RATIO * 15.0)


def test_the_margin_is_ratio_times_the_bias_corrected_moving_average_of_kl_real():
    m = AutoMargin(CPU, decay=0.9)
    seen = [10.0, 30.0, 20.0]
    for k in seen:
        m.observe(torch.tensor(k))
    # by hand: the decay-weighted mean of 10, 30, 20 with weights 0.9^2, 0.9, 1 (times 0.1 each, cancelled)
    w = [0.81, 0.9, 1.0]
    expected = RATIO * sum(a * b for a, b in zip(w, seen)) / sum(w)
    assert m.value.item() == pytest.approx(expected, rel=1e-6)
    assert m(torch.tensor([1000.0])).item() == pytest.approx(expected, rel=1e-6)  # the batch no longer decides
    constant = AutoMargin(CPU)
    for _ in range(7):
        constant.observe(torch.tensor(12.0))
    assert constant.value.item() == pytest.approx(18.0, rel=1e-6)  # a constant KL: exactly 1.5x it, at once


def test_the_margin_stays_where_the_game_started_unless_kl_real_climbs_close_to_it():
    m = AutoMargin(CPU, decay=0.5)
    for _ in range(5):
        m.observe(torch.tensor(20.0))
    start = m(torch.tensor([0.0])).item()
    assert start == pytest.approx(RATIO * 20.0)  # 30: where the game starts
    for _ in range(3):
        m.observe(torch.tensor(10.0))  # kl_real falls: m stays
    assert m(torch.tensor([0.0])).item() == pytest.approx(start) == m.value.item()
    for _ in range(20):
        m.observe(torch.tensor(40.0))  # kl_real climbs past m: m follows at GUARD x its average
    assert m(torch.tensor([0.0])).item() == pytest.approx(GUARD * 40.0, rel=1e-4)
    state = m.state_dict()
    again = AutoMargin(CPU, decay=0.5)
    again.load_state_dict(state)
    assert again.start.item() == pytest.approx(start)


def test_skipped_steps_and_non_finite_values_leave_the_margin_alone():
    m = AutoMargin(CPU)
    m.observe(torch.tensor(10.0))
    before = m.value.item()
    m.observe(torch.tensor(float("nan")))
    m.observe(torch.tensor(float("inf")))
    m.observe(torch.tensor(500.0), ok=torch.tensor(False))
    assert m.value.item() == before == pytest.approx(15.0)


def test_state_round_trips():
    a, b = AutoMargin(CPU), AutoMargin(CPU)
    for k in (3.0, 4.0, 8.0):
        a.observe(torch.tensor(k))
    b.load_state_dict(a.state_dict())
    assert b.value.item() == a.value.item()
    a.observe(torch.tensor(5.0))
    b.observe(torch.tensor(5.0))
    assert torch.equal(a.average, b.average) and torch.equal(a.weight, b.weight)


def test_make_margin_and_the_objective_log_the_margin_in_force():
    assert make_margin(7.0, CPU) == 7.0 and isinstance(make_margin("auto", CPU), AutoMargin)
    cfg = tiny_config(margin="auto")
    with pytest.raises(ValueError, match="AutoMargin"):
        make_objective(cfg)  # "auto" alone is not a number: the run's AutoMargin must be passed
    auto = AutoMargin(CPU)
    assert isinstance(make_objective(cfg, margin=auto), IntroVAELoss)


def test_config_and_cli_take_auto_or_a_number_and_name_the_field_otherwise():
    from introvae.cli import make_parser

    assert TrainConfig().margin == "auto"
    assert tiny_config(margin="auto").margin == "auto" and tiny_config(margin="7").margin == 7.0
    for bad in ("big", -1.0, float("nan")):
        with pytest.raises(ConfigError, match="^margin"):
            tiny_config(margin=bad)
    args = make_parser().parse_args(["train", "--data", "faces", "--margin", "auto"])
    assert args.margin == "auto"
    assert make_parser().parse_args(["train", "--data", "faces", "--margin", "12.5"]).margin == 12.5
    with pytest.raises(UserError, match="--margin: expected auto or float, got 'large'"):
        make_parser().parse_args(["train", "--data", "faces", "--margin", "large"])


def _train(path, data, **kw):
    return Trainer(tiny_config(margin="auto", **kw), path, data=data, show_progress=False, log=lambda s: None)


def test_a_run_logs_the_auto_margin_follows_kl_real_and_resumes_exactly(tmp_path, faces16):
    straight = _train(tmp_path / "a", faces16, steps=10, vae_steps=3, checkpoint_every=100, log_every=1)
    straight.train()
    rows = read_stats(tmp_path / "a")
    assert all(r["margin"] is None for r in rows[:3])  # the warm-up plays no game
    # Step 4 is the first introspective step: its margin is 1.5x the average of the three warm-up KLs.
    w = [DECAY ** 2, DECAY, 1.0]
    expected = RATIO * sum(a * r["kl_real"] for a, r in zip(w, rows[:3])) / sum(w)
    assert rows[3]["margin"] == pytest.approx(expected, rel=1e-5)
    assert all(r["margin"] > r["kl_real"] for r in rows[3:])  # kl_real below m, the paper's rule
    assert all(r["margin"] >= rows[3]["margin"] - 1e-4 for r in rows[3:])  # m never falls below its start
    first = _train(tmp_path / "b", faces16, steps=10, vae_steps=3, checkpoint_every=100, log_every=1)
    first.train(stop_after=5)
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    assert torch.equal(second.run.margin.average, first.run.margin.average)
    second.train()
    a, b = straight.run.model.state_dict(), second.run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["margin"] for r in read_stats(tmp_path / "b")] == [r["margin"] for r in rows]
    assert (tmp_path / "b" / "kl.png").stat().st_size > 1000  # with the margin's curve


def test_margin_check_reads_image_and_2d_runs_and_counts_kl_real_below_the_margin_in_force(tmp_path, faces16):
    """benchmarks/margin_check.py, which the README's Fig. 5 table comes from: its share is the rows after the
    warm-up whose kl_real is below that row's margin, for an image run and a 2D run alike."""
    import importlib.util
    import json
    from pathlib import Path

    from introvae.toy2d.run import ToyConfig, train as train_toy
    from introvae.trainer import Trainer

    spec = importlib.util.spec_from_file_location("margin_check", Path(__file__).parents[1] / "benchmarks"
                                                  / "margin_check.py")
    margin_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(margin_check)

    toy = tmp_path / "toy"
    train_toy(ToyConfig(density="rings", objective="introvae", steps=12, vae_steps=4, batch_size=64, log_every=2,
                        eval_points=200), toy, progress=False)
    image = tmp_path / "image"
    Trainer(tiny_config(margin="auto", vae_steps=2, steps=6, log_every=1), image, data=faces16,
            show_progress=False).train()
    for run, warmup in ((toy, 4), (image, 2)):
        rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
        game = [r for r in rows if r["step"] > warmup and "kl_fake" in r]
        c = margin_check.check(run)
        assert c["rows"] == len(game) > 0 and c["margin"] == "auto"
        assert c["kl_real_below_margin"] == sum(r["kl_real"] < r["margin"] for r in game) / len(game)
        assert c["margin_range"] == (min(r["margin"] for r in game), max(r["margin"] for r in game))
    figure = tmp_path / "kl.png"
    margin_check.kl_figure([toy, image], ["2D rings", "faces"], figure, columns=1)
    assert figure.stat().st_size > 5000
