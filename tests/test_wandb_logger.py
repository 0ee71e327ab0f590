"""--logger wandb: the curves of stats.jsonl, the grids and the settings go to one W&B run, which --resume continues.

A stand-in ``wandb`` module records the calls (the tests need neither the package nor a network); the calls are
those of wandb's public API (init, define_metric, log, config.update, summary, Image, finish)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from conftest import tiny_config


class _Run:
    def __init__(self, calls, **kwargs):
        self.calls, self.kwargs = calls, kwargs
        self.id, self.project = kwargs.get("id") or f"run{len(calls['runs'])}", kwargs["project"]
        self.config = types.SimpleNamespace(update=lambda d, **kw: calls["config"].append(dict(d)))
        self.summary = {}
        self.logged, self.finished = [], False

    def define_metric(self, name, step_metric=None):
        self.calls["define"].append((name, step_metric))

    def log(self, values):
        self.logged.append(dict(values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = {"init": [], "config": [], "define": [], "runs": []}
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    def init(**kwargs):
        calls["init"].append(kwargs)
        calls["runs"].append(_Run(calls, **kwargs))
        return calls["runs"][-1]

    module.init = init
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return calls


def test_a_run_logs_to_wandb_what_stats_jsonl_holds_and_resume_continues_the_same_wandb_run(tmp_path, faces16,
                                                                                            fake_wandb):
    from introvae.stats import read_stats
    from introvae.trainer import Trainer, resume

    cfg = tiny_config(steps=20, log_every=2, image_every=10, checkpoint_every=5, logger="wandb")
    Trainer(cfg, tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None).train(stop_after=13)
    first = fake_wandb["runs"][0]
    assert first.kwargs["project"] == "introvae" and first.kwargs["name"] == "run" and first.kwargs["id"] is None
    assert first.kwargs["dir"] == str(tmp_path / "run") and first.finished
    assert json.loads((tmp_path / "run" / "wandb.json").read_text()) == {"id": "run0", "project": "introvae"}
    assert ("*", "step") in fake_wandb["define"]  # every chart's x-axis is the run's step
    assert fake_wandb["config"][0]["batch_size"] == cfg.batch_size and len(fake_wandb["config"]) == 1

    resume(tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None).train()
    again = fake_wandb["runs"][1]
    assert (again.kwargs["id"], again.kwargs["resume"]) == ("run0", "allow")  # the same W&B run, continued
    assert len(fake_wandb["config"]) == 1  # the settings are logged once, at step 0
    rows = read_stats(tmp_path / "run")
    logged = [v for run in fake_wandb["runs"] for v in run.logged if "loss_encoder" in v]
    # every stats row with its values, once: the first part stopped at 13 with a checkpoint there, and the resumed
    # part went on from it
    assert [v["step"] for v in logged] == [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12, 13, 14, 16, 18, 20]
    by_step = {v["step"]: v for v in logged}
    for row in rows:
        for k in ("loss_encoder", "kl_real", "lr", "images_per_s"):
            assert by_step[row["step"]][k] == pytest.approx(row[k], rel=1e-9), (k, row["step"])
    images = [v for run in fake_wandb["runs"] for v in run.logged if "samples" in v]
    assert [v["step"] for v in images] == [10, 20]
    assert images[1]["samples"] == ("image", str(tmp_path / "run" / "samples-000000020.png"))


def test_without_the_package_wandb_is_refused_in_one_line(tmp_path, faces16, monkeypatch):
    from introvae.errors import ConfigError
    from introvae.trainer import Trainer

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"logger: wandb needs the wandb package: pip install 'introvae\[wandb\]'"):
        Trainer(tiny_config(steps=2, logger="wandb"), tmp_path / "a", data=faces16, show_progress=False,
                log=lambda s: None).train()
