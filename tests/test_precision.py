import copy

import pytest
import torch

from introvae import IntroVAE
from introvae.data import load
from introvae.objectives import IntroVAELoss
from introvae.precision import make_precision
from introvae.step import TrainStep, make_optimizers
from introvae.trainer import Trainer, resume

from conftest import tiny_config

CPU = torch.device("cpu")
OBJECTIVE = IntroVAELoss(margin=5.0, alpha=0.25, beta=1.0)


def _step(model, x, precision=None, steps=1):
    opts = make_optimizers(model, lr=1e-3, betas=(0.9, 0.999))
    step = TrainStep(model, opts, precision=precision)
    torch.manual_seed(5)
    for _ in range(steps):
        out = step(OBJECTIVE, x)
    return out, opts


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_steps_track_fp32(name):
    torch.manual_seed(0)
    base = IntroVAE(tiny_config().model)
    x = torch.rand(4, 1, 16, 16)
    ref, _ = _step(copy.deepcopy(base), x)
    model = copy.deepcopy(base)
    precision = make_precision(name, CPU)
    out, _ = _step(model, x, precision)
    assert out["kl_real"].dtype == torch.float32 and out["loss_encoder"].dtype == torch.float32
    for k in ("loss_encoder", "loss_generator", "kl_real", "kl_fake", "reconstruction"):
        assert out[k].item() == pytest.approx(ref[k].item(), rel=0.05), k
    # fp16 may skip a phase on a gradient overflow while its scaler finds its level; within a
    # few steps both networks have been updated.
    _step(model, x, precision, steps=3)
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters())]
    assert all(changed)


def test_fp16_uses_one_scaler_for_both_optimisers_and_skips_overflow():
    torch.manual_seed(0)
    model = IntroVAE(tiny_config().model)
    precision = make_precision("fp16", CPU)
    x = torch.rand(4, 1, 16, 16)
    step = TrainStep(model, make_optimizers(model, lr=1e-3, betas=(0.9, 0.999)), precision=precision)
    history = [step(OBJECTIVE, x)["overflow"].item() for _ in range(10)]
    assert history[-3:] == [0.0, 0.0, 0.0]  # the scaler found a level at which nothing overflows
    assert precision.scaler.get_scale() <= 1024.0
    before = [p.detach().clone() for p in model.parameters()]
    precision.scaler.update(new_scale=1e38)  # force an overflow of the scaled gradients
    out, _ = _step(model, x, precision)
    assert out["overflow"].item() == 1.0 and out["skipped"].item() == 0.0
    assert precision.scaler.get_scale() < 1e38  # the scaler backed off
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing was stepped


def test_channels_last_gives_the_same_step():
    torch.manual_seed(0)
    base = IntroVAE(tiny_config().model)
    x = torch.rand(4, 1, 16, 16)
    ref, _ = _step(copy.deepcopy(base), x)
    model = copy.deepcopy(base).to(memory_format=torch.channels_last)
    out, _ = _step(model, x.contiguous(memory_format=torch.channels_last))
    for k in ("loss_encoder", "loss_generator"):
        assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-4)


def test_fp16_run_resumes_exactly_with_its_scaler(tmp_path):
    data = load("faces", image_size=16, in_channels=1, holdout_fraction=0.2)
    cfg = tiny_config(steps=6, precision="fp16", channels_last=True, checkpoint_every=100)

    def quiet(run):
        return Trainer(cfg, run, data=data, show_progress=False, log=lambda s: None)

    a = quiet(tmp_path / "a")
    a.train()
    b = quiet(tmp_path / "b")
    b.train(stop_after=3)
    b = resume(tmp_path / "b", data=data, show_progress=False, log=lambda s: None)
    assert b.run.precision.scaler.get_scale() == a.run.precision.scaler.get_scale()
    b.train()
    for (k, va), vb in zip(a.run.model.state_dict().items(), b.run.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_precision_and_device_are_validated():
    from introvae import ConfigError

    with pytest.raises(ConfigError, match="^precision: must be one of auto, fp32, bf16, fp16"):
        tiny_config(precision="fp8")
    with pytest.raises(ConfigError, match="^device:"):
        tiny_config(device="tpu")
    with pytest.raises(ConfigError, match="^channels_last: expected true or false"):
        tiny_config().replace(channels_last="maybe")
    assert tiny_config().replace(channels_last="true").channels_last is True


@pytest.mark.parametrize("flags, warned", [({"avx2"}, True), ({"avx2", "avx512f", "avx512_bf16"}, False),
                                           ({"avx2", "amx_bf16", "amx_tile"}, False)])
def test_bf16_on_a_cpu_that_emulates_it_says_so_once_with_the_faster_choice(monkeypatch, tmp_path, faces16, capsys,
                                                                           flags, warned):
    import warnings

    from introvae import devices
    from introvae.cli import main
    from introvae.errors import SettingWarning
    from introvae.precision import emulated_warning

    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    line = emulated_warning("bf16", CPU)
    assert (line is not None) == warned
    assert emulated_warning("fp32", CPU) is None
    if warned:
        assert line.startswith("precision bf16: this CPU has no native bf16") and line.endswith(
            "--precision fp32 is the faster choice here")
        assert emulated_warning("bf16", CPU, "--feature-precision").endswith("--feature-precision fp32 is the faster "
                                                                           "choice here")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Trainer(tiny_config(precision="bf16", steps=1), tmp_path / "run", data=faces16, show_progress=False)
    assert [str(w.message) for w in seen if w.category is SettingWarning] == ([line] if warned else [])
    with warnings.catch_warnings(record=True) as seen:  # every user of make_precision (the 2D runs too); not twice
        warnings.simplefilter("always")
        make_precision("bf16", CPU)
        make_precision("bf16", CPU, warn=False)  # the other processes under torchrun
    assert [str(w.message) for w in seen if w.category is SettingWarning] == ([line] if warned else [])
    # the command line prints it as one plain warning line
    assert main(["train", "--data", "faces", "--image-size", "16", "--channels", "4,8,8", "--latent-dim", "8",
                 "--batch-size", "4", "--steps", "1", "--precision", "bf16", "--out", str(tmp_path / "cli"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (f"introvae: warning: {line}\n" in err) == warned and "SettingWarning" not in err


@pytest.mark.parametrize("flags, expected", [({"avx2"}, "fp32"), ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
                                             ({"avx2", "amx_bf16", "amx_tile"}, "bf16")])
def test_auto_precision_is_bf16_with_channels_last_only_where_the_cpu_computes_bf16(monkeypatch, tmp_path, faces16,
                                                                                  flags, expected):
    from introvae import devices
    from introvae.precision import resolve

    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    assert resolve("auto", CPU) == expected and resolve("fp16", CPU) == "fp16" and resolve("fp32", CPU) == "fp32"
    for gpu_bf16, on_gpu in ((True, "bf16"), (False, "fp32")):  # a GPU: bf16 where it computes it (no CUDA needed)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: gpu_bf16)
        assert resolve("auto", torch.device("cuda")) == on_gpu
    assert resolve("auto", torch.device("mps")) == "fp32"
    trainer = Trainer(tiny_config(precision="auto", steps=2), tmp_path / "run", data=faces16, show_progress=False)
    run = trainer.run
    assert run.precision.name == expected and run.channels_last == (expected == "bf16")
    assert run.precision_words == ("bf16, channels-last (auto)" if expected == "bf16" else "fp32 (auto)")
    weight = next(p for p in run.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last) == (expected == "bf16")
    trainer.train()  # the batches follow the model's layout; the run trains
    assert trainer.step == 2
    # given by hand, a precision keeps the layout asked for
    fixed = Trainer(tiny_config(precision="bf16", steps=1), tmp_path / "b", data=faces16, show_progress=False).run
    assert fixed.channels_last is False and fixed.precision_words == "bf16"
