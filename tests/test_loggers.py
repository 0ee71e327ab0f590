"""TensorBoard beside stats.jsonl: the same numbers, at the same steps, continued (not duplicated) on resume."""

from __future__ import annotations

import pytest

from conftest import tiny_config

pytest.importorskip("tensorboard")


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_a_run_logs_to_tensorboard_what_stats_jsonl_holds(tmp_path, faces16):
    from introvae.stats import read_stats
    from introvae.trainer import Trainer, resume

    cfg = tiny_config(steps=20, log_every=2, image_every=10, checkpoint_every=5, logger="tensorboard")
    Trainer(cfg, tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None).train(stop_after=13)
    r = resume(tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None)
    r.train()  # resumes from step 10: steps 11-13 are replayed, and must not appear twice
    rows = read_stats(tmp_path / "run")
    acc = _scalars(tmp_path / "run")
    for tag in ("loss_encoder", "loss_generator", "kl_real", "kl_rec", "kl_fake", "lr", "alpha", "images_per_s"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in rows if r.get(tag) is not None], tag
        for e, row in zip(events, [r for r in rows if r.get(tag) is not None]):
            assert e.value == pytest.approx(row[tag], rel=1e-6), (tag, row["step"])
    assert [e.step for e in acc.Images("samples")] == [10, 20]
    assert "config" in " ".join(acc.Tags()["tensors"]) or acc.Tags()["tensors"]


def test_none_writes_nothing_and_auto_writes_where_installed(tmp_path, faces16):
    from introvae.trainer import Trainer

    Trainer(tiny_config(steps=2, logger="none"), tmp_path / "a", data=faces16, show_progress=False,
            log=lambda s: None).train()
    assert not (tmp_path / "a" / "tensorboard").exists()
    Trainer(tiny_config(steps=2, logger="auto"), tmp_path / "b", data=faces16, show_progress=False,
            log=lambda s: None).train()
    assert any((tmp_path / "b" / "tensorboard").iterdir())
