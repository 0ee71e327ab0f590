"""The time estimate printed before a long training run (src/introvae/eta.py), on a fake clock."""

import pytest

from introvae import eta


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(monkeypatch, *, end, warmup_end, seconds_per_step, start=0):
    """Lines said by an estimate over a run whose step ``i`` (0-based) takes ``seconds_per_step(i)`` seconds."""
    clock, said = Clock(), []
    monkeypatch.setattr(eta.time, "perf_counter", clock)
    est = eta.TrainingEstimate(end=end, warmup_end=warmup_end, say=said.append)
    for i in range(start, end):
        clock.t += seconds_per_step(i)
        est.step_done(i + 1)
    return said


def test_a_run_of_one_kind_of_step_gets_one_line_from_its_first_timed_steps(monkeypatch):
    # the first step is slow (kernels, caches) and not timed; then 0.5 s a step: 979 steps left after step 21
    said = run(monkeypatch, end=1000, warmup_end=0, seconds_per_step=lambda i: 30.0 if i == 0 else 0.5)
    assert said == ["training: 979 steps left, about 8 min (timed over 20 steps)"]


def test_a_short_run_says_nothing(monkeypatch):
    assert run(monkeypatch, end=100, warmup_end=0, seconds_per_step=lambda i: 0.5) == []


def test_a_long_warmup_extrapolates_the_introspective_steps_and_a_wrong_guess_is_corrected(monkeypatch):
    # 2,000 warm-up steps of 0.1 s (over a minute), introspective 0.5 s (5x, against the assumed 2.5x)
    said = run(monkeypatch, end=4000, warmup_end=2000, seconds_per_step=lambda i: 0.1 if i < 2000 else 0.5)
    expected_first = 0.1 * (2000 - 21 + eta.INTROSPECTIVE_COST * 2000)  # 697.9 s
    assert said[0] == (f"training: 3979 steps left, about {expected_first / 60:.0f} min (timed over 20 steps; the "
                       f"introspective steps after the warm-up counted as 2.5 warm-up steps each until measured)")
    assert said[1] == f"training: timed over the first introspective steps, about {0.5 * (4000 - 2021) / 60:.0f} min left"
    assert len(said) == 2


def test_a_right_guess_is_not_repeated(monkeypatch):
    said = run(monkeypatch, end=4000, warmup_end=2000, seconds_per_step=lambda i: 0.1 if i < 2000 else 0.25)
    assert len(said) == 1 and "until measured" in said[0]


def test_after_a_short_warmup_the_introspective_steps_are_timed_before_anything_is_said(monkeypatch):
    # the demo's shape: 200 warm-up steps of 0.05 s (10 s), then 600 introspective ones of 0.12 s
    said = run(monkeypatch, end=800, warmup_end=200, seconds_per_step=lambda i: 0.05 if i < 200 else 0.12)
    assert said == [f"training: {800 - 221} steps left, about {0.12 * 579:.0f} s (timed over 20 steps)"]


def test_a_warmup_shorter_than_the_timing_window_times_the_introspective_steps_only(monkeypatch):
    said = run(monkeypatch, end=1000, warmup_end=5, seconds_per_step=lambda i: 0.01 if i < 5 else 0.5)
    assert said == [f"training: {1000 - 26} steps left, about {0.5 * 974 / 60:.0f} min (timed over 20 steps)"]


def test_a_resumed_run_times_from_where_it_resumed(monkeypatch):
    said = run(monkeypatch, start=500, end=1000, warmup_end=200, seconds_per_step=lambda i: 0.5)
    assert said == [f"training: {1000 - 521} steps left, about {0.5 * 479 / 60:.0f} min (timed over 20 steps)"]


@pytest.mark.parametrize("seconds,text", [(45, "45 s"), (89, "89 s"), (90, "2 min"), (600, "10 min")])
def test_minutes(seconds, text):
    assert eta.minutes(seconds) == text
