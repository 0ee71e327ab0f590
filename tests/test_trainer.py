import json

import pytest
import torch

from introvae import checkpoint
from introvae.errors import UserError
from introvae.runs import load_model
from introvae.stats import read_stats
from introvae import trainer as trainer_mod
from introvae.trainer import Trainer, resume

from conftest import tiny_config


def _train(tmp, data, **kw):
    return Trainer(tiny_config(**kw), tmp, data=data, show_progress=False, log=lambda s: None)


def test_run_directory_holds_config_stats_grids_plot_and_checkpoints(tmp_path, faces16):
    t = _train(tmp_path / "run", faces16, steps=6, vae_steps=2)
    t.train()
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["steps"] == 6
    rows = read_stats(run)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert set(rows[0]) >= {"step", "epoch", "images_per_s", "loss_encoder", "loss_generator", "reconstruction",
                            "kl_real", "kl_rec", "kl_fake"}
    assert rows[0]["alpha"] == 0.0 and rows[0]["kl_fake"] is None  # warm-up: plain VAE
    assert rows[-1]["alpha"] == 0.25 and rows[-1]["kl_fake"] > 0
    assert {p.name for p in run.glob("*.png")} == {"samples-000000003.png", "reconstructions-000000003.png",
                                                  "samples-000000006.png", "reconstructions-000000006.png",
                                                  "kl.png"}
    assert [p.name for p in checkpoint.list_checkpoints(run)] == [
        "step-000000000.pt", "step-000000003.pt", "step-000000006.pt"]
    state = checkpoint.load(checkpoint.latest(run))
    assert set(state) >= {"model", "optimizers", "step", "torch_rng", "config", "version", "format"}


def test_interrupted_and_resumed_run_ends_with_exactly_the_same_weights(tmp_path, faces16):
    straight = _train(tmp_path / "a", faces16, steps=10, vae_steps=3, checkpoint_every=100)
    straight.train()

    first = _train(tmp_path / "b", faces16, steps=10, vae_steps=3, checkpoint_every=100)
    first.train(stop_after=4)  # stopped mid-epoch (3 steps per epoch) and inside nothing special
    assert first.step == 4
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    assert second.step == 4
    second.train()
    assert second.step == 10
    a, b = straight.run.model.state_dict(), second.run.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in ("encoder", "decoder"):
        oa, ob = straight.run.optimizers[name], second.run.optimizers[name]
        for sa, sb in zip(oa.state_dict()["state"].values(), ob.state_dict()["state"].values()):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    # the stats of the resumed run continue the first part without gaps or repeats
    assert [r["step"] for r in read_stats(tmp_path / "b")] == [2, 4, 6, 8, 10]



def test_a_stop_between_log_steps_logs_the_steps_since_the_last_row(tmp_path, faces16):
    """A stop (Ctrl-C, a time budget) at a step that is not a log step writes the row of the steps since the last
    one, so that stats.jsonl counts every step trained and its time; the resumed run continues unchanged."""
    straight = _train(tmp_path / "a", faces16, steps=8, vae_steps=3, checkpoint_every=100)
    straight.train()
    t = _train(tmp_path / "b", faces16, steps=8, vae_steps=3, checkpoint_every=100)
    train_step = t.train_step

    def then_stop(*args, **kwargs):  # as a signal arriving during step 5 (log_every is 2)
        out = train_step(*args, **kwargs)
        t.stop_requested = t.stop_requested or t.run.step == 4
        return out

    t.train_step = then_stop
    t.train()
    assert t.step == 5 and [r["step"] for r in read_stats(tmp_path / "b")] == [2, 4, 5]
    assert read_stats(tmp_path / "b")[-1]["loss_encoder"] is not None
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    second.train()
    assert [r["step"] for r in read_stats(tmp_path / "b")] == [2, 4, 5, 6, 8]
    a, b = straight.run.model.state_dict(), second.run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

def test_keeps_the_last_k_checkpoints_and_resume_skips_a_corrupt_newest(tmp_path, faces16):
    t = _train(tmp_path / "r", faces16, steps=8, checkpoint_every=2, keep_checkpoints=2)
    t.train(stop_after=6)
    found = checkpoint.list_checkpoints(tmp_path / "r")
    assert [p.name for p in found] == ["step-000000004.pt", "step-000000006.pt"]
    found[-1].write_bytes(found[-1].read_bytes()[:100])  # truncated, as by a crash mid-copy
    messages = []
    r = resume(tmp_path / "r", data=faces16, show_progress=False, log=messages.append)
    assert r.step == 4 and any("cannot read checkpoint" in m for m in messages)


def test_checkpoints_between_the_regular_ones_go_once_a_newer_regular_one_exists(tmp_path):
    """With --checkpoint-every, --keep-checkpoints counts the regular checkpoints only: the clock's, a stop's or a
    run's end stay until a newer regular one is written, so that they never push out those a sweep needs."""
    d = tmp_path / "checkpoints"
    d.mkdir()

    def write(step):
        (d / f"step-{step:09d}.pt").write_bytes(b"x")
        checkpoint.prune(tmp_path, 2, every=10)
        return [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(tmp_path)]

    assert write(0) == [0]
    assert write(4) == [0, 4]  # by the clock: the newest, kept
    assert write(7) == [0, 4, 7]
    assert write(10) == [0, 10]  # a regular one: those before it go, two regular kept
    assert write(13) == [0, 10, 13]
    assert write(20) == [10, 20]
    assert write(25) == [10, 20, 25]  # a stop's, and the newest: stays while it is the resume point
    checkpoint.prune(tmp_path, 1, every=0)  # without --checkpoint-every: the newest keep of all
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(tmp_path)] == [25]


def test_resume_errors_are_clear(tmp_path, faces16):
    with pytest.raises(UserError, match="not a run directory"):
        resume(tmp_path / "nothing")
    t = _train(tmp_path / "r", faces16, steps=2)
    t._prepare_run_dir()
    with pytest.raises(UserError, match="no checkpoint yet"):
        resume(tmp_path / "r")


def test_checkpoint_of_another_format_is_refused(tmp_path, faces16):
    t = _train(tmp_path / "r", faces16, steps=2)
    t.train()
    path = checkpoint.latest(tmp_path / "r")
    state = checkpoint.load(path)
    state["format"] = 99
    torch.save(state, path)
    with pytest.raises(checkpoint.CheckpointError, match="format 99.*networks differ"):
        checkpoint.load(path)


def test_load_model_from_run_dir_checkpoint_and_export(tmp_path, faces16):
    t = _train(tmp_path / "r", faces16, steps=2)
    t.train()
    m1 = load_model(tmp_path / "r", device="cpu")
    m2 = load_model(checkpoint.latest(tmp_path / "r"))
    assert m1.step == m2.step == 2
    m1.save_pretrained(tmp_path / "export")
    m3 = load_model(tmp_path / "export")
    z = torch.randn(2, m1.config.latent_dim)
    assert torch.equal(m1.sample(z=z), m2.sample(z=z)) and torch.equal(m1.sample(z=z), m3.sample(z=z))
    assert not m1.training


def test_unwritable_run_directory_fails_before_training(tmp_path, faces16):
    (tmp_path / "file").write_text("x")
    with pytest.raises((UserError, OSError)):
        _train(tmp_path / "file" / "run", faces16, steps=2).train()


def test_batch_larger_than_the_data_is_a_clear_error(faces16):
    with pytest.raises(UserError, match="batch_size: 200 is larger"):
        Trainer(tiny_config(batch_size=200), "unused", data=faces16, show_progress=False)


def test_the_average_remembers_at_most_the_steps_there_are():
    from introvae.ema import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 3750) == pytest.approx(3751 / 3760)  # a memory of ~420 steps after one epoch of 16
    assert ema_decay(0.999, 8989) < 0.999 == ema_decay(0.999, 8990) == ema_decay(0.999, 10**6)
    assert ema_decay(0.5, 0) == pytest.approx(0.1) and ema_decay(0.5, 8) == 0.5


def test_ema_generator_averages_the_weights_survives_resume_and_is_what_sampling_uses(tmp_path, faces16,
                                                                                     monkeypatch):
    import introvae.trainer as trainer_mod

    decay = 0.9
    t = _train(tmp_path / "e", faces16, steps=3, ema=decay, checkpoint_every=100)
    start = {k: v.clone() for k, v in t.run.ema.state_dict().items()}
    history = []  # the live generator after each step
    real_update = trainer_mod.update_ema

    def spy(ema, decoder, d, **kw):
        history.append({k: v.clone() for k, v in decoder.state_dict().items()})
        real_update(ema, decoder, d, **kw)

    monkeypatch.setattr(trainer_mod, "update_ema", spy)
    t.train()
    monkeypatch.undo()
    assert len(history) == 3
    averaged = {name: p for name, p in t.run.ema.state_dict().items() if p.is_floating_point()}
    assert "stages.0.bn1.running_mean" in averaged and "stages.0.bn1.running_var" in averaged
    for name, p in averaged.items():  # weights and BatchNorm statistics alike
        expect = start[name]
        for h, d in zip(history, (2 / 11, 3 / 12, 4 / 13)):  # after steps 1, 2, 3: (1 + t) / (10 + t) < 0.9
            expect = d * expect + (1 - d) * h[name]
        assert torch.allclose(p, expect, atol=1e-6), name
        assert not torch.equal(p, t.run.model.decoder.state_dict()[name])  # an average, not the last weights
    assert torch.equal(t.run.ema.state_dict()["stages.0.bn1.num_batches_tracked"],
                       history[-1]["stages.0.bn1.num_batches_tracked"])

    # sampling (sample, evaluate, export) uses the average; --no-ema the trained generator
    z = torch.randn(2, 8)
    assert torch.allclose(load_model(tmp_path / "e").decoder(z), t.run.ema.eval()(z), atol=1e-6)
    assert torch.allclose(load_model(tmp_path / "e", ema=False).decoder(z), t.run.model.decoder.eval()(z), atol=1e-6)
    assert load_model(tmp_path / "e").generator_source == "ema"  # recorded in metrics.json by evaluate
    assert load_model(tmp_path / "e", ema=False).generator_source == "trained"

    # exact resume of the average
    straight = _train(tmp_path / "s", faces16, steps=6, ema=decay, checkpoint_every=100)
    straight.train()
    part = _train(tmp_path / "p", faces16, steps=6, ema=decay, checkpoint_every=100)
    part.train(stop_after=2)
    rest = resume(tmp_path / "p", data=faces16, show_progress=False, log=lambda s: None)
    rest.train()
    for k, v in straight.run.ema.state_dict().items():
        assert torch.equal(v, rest.run.ema.state_dict()[k]), k


def test_compile_traces_the_training_passes_and_trains_the_same(tmp_path, faces16, monkeypatch):
    """--compile wraps E and G in torch.compile. The aot_eager backend traces forward and backward
    graphs as inductor does, but without generating C++ (seconds instead of minutes)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    import introvae.wrappers as wrappers

    monkeypatch.setattr(wrappers, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    torch._dynamo.reset()
    counters.clear()
    compiled = _train(tmp_path / "c", faces16, steps=3, vae_steps=1, compile=True, checkpoint_every=100,
                      checkpoint_activations=True)  # both, as at 1024 px on a GPU
    compiled.train()
    assert counters["stats"]["unique_graphs"] >= 2  # encoder and generator graphs were captured
    eager = _train(tmp_path / "e", faces16, steps=3, vae_steps=1, checkpoint_every=100)
    eager.train()
    a, b = eager.run.model.state_dict(), compiled.run.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k
    torch._dynamo.reset()


def test_compile_covers_the_frozen_passes_too(tmp_path, faces16, monkeypatch):
    """The generator phase's passes through the frozen encoder run compiled as well: the frozen wrapper is the
    compiled network, and compiling it adds the graphs of its frozen variant to those of the updating passes."""
    import torch._dynamo
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    import introvae.wrappers as wrappers

    monkeypatch.setattr(wrappers, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    graphs = {}
    for frozen_compiled in (True, False):
        torch._dynamo.reset()
        counters.clear()
        t = _train(tmp_path / str(frozen_compiled), faces16, steps=3, vae_steps=1, compile=True, checkpoint_every=100)
        step = t.train_step
        assert all(isinstance(m, OptimizedModule) and m._orig_mod is step.networks[k]
                   for k, m in step.frozen_wrappers.items())
        if not frozen_compiled:
            step.frozen_wrappers = step.networks
        t.train()
        graphs[frozen_compiled] = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs[True] > graphs[False] >= 2, graphs


def test_a_checkpoint_of_non_fused_adam_resumes_with_the_fused_optimiser(tmp_path, faces16):
    """A run whose optimisers were not fused (a device without the fused kernel) resumes with fused ones where
    they exist, and keeps the guard's skip on the device (a non-fused state would switch the kernel off)."""
    from introvae.step import masks_steps

    t = _train(tmp_path / "old", faces16, steps=4, checkpoint_every=100)
    t.run.optimizers["encoder"] = torch.optim.Adam(t.run.model.encoder.parameters(), lr=t.config.lr)
    t.run.optimizers["decoder"] = torch.optim.Adam(t.run.model.decoder.parameters(), lr=t.config.lr)
    t.train_step.optimizers = t.run.optimizers
    t.train(stop_after=2)
    saved = checkpoint.load(checkpoint.latest(tmp_path / "old"))["optimizers"]
    assert saved["encoder"]["param_groups"][0]["fused"] is None
    r = resume(tmp_path / "old", data=faces16, show_progress=False, log=lambda s: None)
    assert r.run.optimizers["encoder"].param_groups[0]["fused"] and masks_steps(r.run.optimizers["encoder"])
    r.train()
    assert r.step == 4 and r.run.weights_finite()


def test_alpha_early_trains_the_first_epochs_with_its_own_weight_then_alpha_and_survives_resume(tmp_path, faces16):
    early = dict(steps=10, vae_steps=2, alpha=0.25, alpha_early=0.5, alpha_early_epochs=0.25, log_every=1,
                 checkpoint_every=100)
    t = _train(tmp_path / "early", faces16, **early)
    assert t.run.alpha_early_steps == 5  # a quarter of an epoch of 20 steps
    t.train()
    alphas = [r["alpha"] for r in read_stats(tmp_path / "early")]
    assert alphas == [0.0] * 2 + [0.5] * 3 + [0.25] * 5
    # the first 5 steps are those of a run with alpha 0.5 throughout, and not those of alpha 0.25
    def five_steps(name, **kw):  # built and trained in turn: a Trainer seeds the global RNG when it is built
        tr = _train(tmp_path / name, faces16, **kw)
        tr.train(stop_after=5)
        return tr.run.model.state_dict()

    probe = five_steps("probe", **early)
    half = five_steps("half", **{**early, "alpha": 0.5, "alpha_early_epochs": 0.0})
    quarter = five_steps("quarter", **{**early, "alpha_early_epochs": 0.0})
    assert all(torch.equal(probe[k], half[k]) for k in half)
    assert not all(torch.equal(probe[k], quarter[k]) for k in quarter)
    # stopped before the switch and resumed: the switch happens at the same step, the weights end the same
    first = _train(tmp_path / "b", faces16, **early)
    first.train(stop_after=4)
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    assert second.run.alpha_early_steps == 5
    second.train()
    a, b = t.run.model.state_dict(), second.run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["alpha"] for r in read_stats(tmp_path / "b")] == alphas


def test_the_kl_plot_marks_where_alpha_early_hands_over_to_alpha():
    from introvae.plots import alpha_switches

    rows = [{"step": s, "alpha": a} for s, a in ((1, 0.0), (2, 0.5), (3, 0.5), (4, 0.25), (5, 0.25), (6, None))]
    assert alpha_switches(rows) == [(3, 0.5, 0.25)]
    assert alpha_switches([{"step": 1, "alpha": 0.0}, {"step": 2, "alpha": 0.25}]) == []  # the warm-up's end


def test_the_schedule_names_each_steps_segment_and_keeps_images_on_a_rescale():
    from types import SimpleNamespace

    from introvae.schedule import Schedule

    s = Schedule(warmup_steps=3, alpha_early_steps=6)
    assert [s.segment(k) for k in (0, 2, 3, 5, 6, 100)] == ["warm-up", "warm-up", "early", "early", "main", "main"]
    cfg = SimpleNamespace(objective="introvae", alpha=0.25, alpha_early=0.5)
    assert [s.alpha_at(k, cfg) for k in (2, 3, 6)] == [0.0, 0.5, 0.25]
    assert s.alpha_at(7, SimpleNamespace(**{**vars(cfg), "objective": "soft-introvae"})) is None
    assert s.alpha_at(7, SimpleNamespace(**{**vars(cfg), "objective": "vae"})) == 0.0
    # at step 4, the global batch doubles: the early segment's last 2 steps become 1, the warm-up is past
    assert s.rescaled(4, old_batch=16, new_batch=32) == Schedule(warmup_steps=3, alpha_early_steps=5)
    assert s.rescaled(0, old_batch=16, new_batch=8) == Schedule(warmup_steps=6, alpha_early_steps=12)


def test_a_bernoulli_vae_trains_on_the_cross_entropy_and_its_model_samples_images_in_0_1(tmp_path, faces16):
    """At the start the decoder's means are near 1/2, so the cross-entropy of a 16x16 image is near 256 log 2 = 177
    nats (185 here; the Gaussian run's first error is 88); the run saves a Bernoulli model."""
    _train(tmp_path / "b", faces16, objective="vae", likelihood="bernoulli", steps=4).train()
    first = read_stats(tmp_path / "b")[0]["reconstruction"]
    assert 120 < first < 260, first
    model = load_model(tmp_path / "b")
    assert model.config.likelihood == "bernoulli"
    x = model.sample(8, seed=0)
    assert 0 <= x.min() and x.max() <= 1


def test_the_rate_halves_every_lr_half_life_epochs_of_images_and_a_resumed_run_follows_it_exactly(tmp_path, faces16):
    kw = dict(steps=10, vae_steps=3, checkpoint_every=100, lr=1e-3, lr_half_life=0.5)
    straight = _train(tmp_path / "a", faces16, **kw)
    straight.train()
    n, batch = straight.run.num_train, 4
    assert n % batch == 0  # every image of an epoch is used: images seen = steps x batch
    for row in read_stats(tmp_path / "a"):  # the rate of a step is set from the images seen before it
        expected = 1e-3 * 0.5 ** ((row["step"] - 1) * batch / n / 0.5)
        assert row["lr"] == pytest.approx(expected, rel=1e-12), row
    first = _train(tmp_path / "b", faces16, **kw)
    first.train(stop_after=4)
    second = resume(tmp_path / "b", data=faces16, show_progress=False, log=lambda s: None)
    second.train()
    a, b = straight.run.model.state_dict(), second.run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and second.run.lr == straight.run.lr
    # a rollback halves the scheduled rate as it halves a fixed one
    second.run.rollbacks += 1
    assert second.run.scheduled_lr() == pytest.approx(straight.run.scheduled_lr() * 0.5)
    with pytest.raises(Exception, match="lr_half_life: must be >= 0"):
        tiny_config(lr_half_life=-1)


def test_a_late_decay_keeps_the_rate_until_lr_decay_start_and_a_fork_switches_it_on_there(tmp_path, faces16):
    """lr_decay_start: the halving counts only the images seen after it; a fork of a fixed-rate run's checkpoint
    with --lr-half-life and --lr-decay-start at its step keeps the rate at first and halves it from there."""
    quiet = dict(data=faces16, show_progress=False, log=lambda s: None)
    kw = dict(steps=10, vae_steps=3, checkpoint_every=4, lr=1e-3)
    late = _train(tmp_path / "a", faces16, **kw, lr_half_life=0.1, lr_decay_start=0.125)
    late.train()
    n, batch = late.run.num_train, 4
    assert n == 80  # 0.125 epochs: 2.5 steps of images
    rows = read_stats(tmp_path / "a")
    for row in rows:
        epochs = (row["step"] - 1) * batch / n
        assert row["lr"] == pytest.approx(1e-3 * 0.5 ** (max(0.0, epochs - 0.125) / 0.1), rel=1e-12), row
    assert {r["lr"] for r in rows if r["step"] <= 3} == {1e-3} and rows[-1]["lr"] < 1e-3 / 2
    _train(tmp_path / "b", faces16, **kw).train()  # a fixed rate, forked at its step 4
    fork = trainer_mod.fork(checkpoint.checkpoint_path(tmp_path / "b", 4), tmp_path / "c",
                            {"lr_half_life": 0.1, "lr_decay_start": 4 * batch / n}, **quiet)
    assert fork.run.lr == pytest.approx(1e-3)  # no jump at the fork
    fork.train()
    rates = {row["step"]: row["lr"] for row in read_stats(tmp_path / "c")}
    assert rates[10] == pytest.approx(1e-3 * 0.5 ** ((9 - 4) * batch / n / 0.1), rel=1e-12)
    with pytest.raises(Exception, match="lr_decay_start: must be >= 0"):
        tiny_config(lr_decay_start=-1)
