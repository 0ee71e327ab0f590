"""Every command on an accelerator, proven on a CPU-only machine (see fake_accelerator.py).

A GPU user's first run used to crash at the first snapshot (a CPU tensor concatenated with one on the
GPU), and sampling, evaluation and the FID network always ran on the CPU. Here the ``meta`` device stands
in for the GPU: any operation that mixes it with the host raises as CUDA does, while values are computed
for real. The same run on the stand-in and on the CPU must also end with the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import a_2d_run_killed_after_checkpoint, tiny_config, tiny_features, write_pngs
from fake_accelerator import ACCELERATOR, DeviceMixError, OnAccelerator, fake_accelerator
from introvae import devices
from introvae.cli import main
from introvae.runs import load_model
from introvae.trainer import Trainer, resume


@pytest.fixture
def accelerator(monkeypatch):
    """``--device cuda`` (and ``auto``) resolve to the stand-in accelerator."""
    real = devices.resolve_device
    monkeypatch.setattr(devices, "resolve_device",
                        lambda name="auto": ACCELERATOR if name in ("auto", "cuda") else real(name))
    with fake_accelerator() as mode:
        yield mode


def test_the_stand_in_catches_what_a_gpu_rejects():
    with fake_accelerator():
        on_device, on_host = torch.ones(3, device=ACCELERATOR), torch.ones(3)
        assert isinstance(on_device, OnAccelerator) and on_device.device == ACCELERATOR
        with pytest.raises(DeviceMixError, match="same device"):
            torch.cat([on_device, on_host])
        with pytest.raises(DeviceMixError):
            torch.nn.Linear(3, 2)(on_device)  # weights on the host, input on the device
        with pytest.raises(DeviceMixError):
            torch.stack([on_device.sum(), torch.tensor(1.0)])  # a host scalar is no scalar to stack
        with pytest.raises(DeviceMixError, match="generator"):
            torch.randn(3, generator=torch.Generator(), device=ACCELERATOR)
        # what CUDA allows: host scalars in pointwise operations, copies, reading values
        assert torch.equal((on_device * torch.tensor(2.0)).cpu(), torch.full((3,), 2.0))
        assert (on_device + 1).sum().item() == 6.0 and on_device.tolist() == [1.0, 1.0, 1.0]


def _train(run_dir, data, **kw):
    # margin auto: its average, its all-reduce-free path and its checkpointed state on the device as well
    cfg = tiny_config(steps=6, vae_steps=2, ema=0.9, eval_every=3, eval_samples=20, margin="auto", **kw)
    t = Trainer(cfg, run_dir, data=data, show_progress=False, log=lambda s: None)
    t.feature_fn = tiny_features
    return t


def test_training_snapshots_evaluation_and_resume_run_on_the_accelerator(tmp_path, faces16, accelerator,
                                                                        monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    t = _train(tmp_path / "gpu", faces16, device="cuda")
    assert t.device == ACCELERATOR and t.run.model.device == ACCELERATOR and t.run.ema.to_image.weight.device == ACCELERATOR
    t.train(stop_after=4)  # a snapshot (step 3), an evaluation during training (step 3), checkpoints
    r = resume(tmp_path / "gpu", data=faces16, show_progress=False, log=lambda s: None)
    r.feature_fn = tiny_features
    r.train()
    assert r.step == 6 and r.run.model.device == ACCELERATOR and accelerator.ops > 1000
    assert (tmp_path / "gpu" / "samples-000000006.png").is_file() and (tmp_path / "gpu" / "kl.png").is_file()
    # The same run on the CPU ends with the same weights: nothing takes another path on the accelerator.
    with torch.no_grad():
        gpu = {k: v.cpu() for k, v in r.run.model.state_dict().items()}
    cpu_run = _train(tmp_path / "cpu", faces16, device="cpu")
    cpu_run.train()
    for k, v in cpu_run.run.model.state_dict().items():
        assert torch.allclose(v.float(), gpu[k].float(), rtol=1e-5, atol=1e-6), k


def test_soft_introvae_the_vae_and_a_2d_density_run_on_the_accelerator(tmp_path, faces16, accelerator, capsys):
    # the VAE runs its generator once more per step on prior draws (no gradients): on the accelerator too
    for objective in ("soft-introvae", "vae"):
        runs = {}
        for device in ("cuda", "cpu"):
            cfg = tiny_config(objective=objective, beta_neg=8.0, steps=4, vae_steps=1, device=device)
            runs[device] = Trainer(cfg, tmp_path / objective / device, data=faces16, show_progress=False,
                                   log=lambda s: None)
            runs[device].train()
        assert runs["cuda"].run.model.device == ACCELERATOR and (tmp_path / objective / "cuda" / "kl.png").is_file()
        with torch.no_grad():
            gpu = {k: v.cpu() for k, v in runs["cuda"].run.model.state_dict().items()}
        for k, v in runs["cpu"].run.model.state_dict().items():
            assert torch.allclose(v.float(), gpu[k].float(), rtol=1e-5, atol=1e-6), (objective, k)
    ops = accelerator.ops
    assert main(["train", "--data", "rings", "--objective", "soft-introvae", "--steps", "4", "--vae-steps", "1",
                 "--batch-size", "32", "--log-every", "2", "--device", "cuda", "--out", str(tmp_path / "toy"),
                 "--quiet"]) == 0
    assert "on meta" in capsys.readouterr().out and accelerator.ops > ops + 100
    assert (tmp_path / "toy" / "density.png").is_file()


def test_sample_reconstruct_interpolate_evaluate_calibrate_and_demo_on_the_accelerator(tmp_path, faces16, capsys,
                                                                                      accelerator, monkeypatch):
    monkeypatch.setenv("INTROVAE_CACHE", str(tmp_path / "cache"))
    import introvae.metrics.context as context

    monkeypatch.setattr(context.fidlib, "load_inception", lambda device, **_: tiny_features)
    t = _train(tmp_path / "run", faces16, device="cuda")
    t.train()
    model = load_model(tmp_path / "run", device="cuda")
    assert model.device == ACCELERATOR and model.generator_source == "ema"
    assert model.sample(5, seed=1, batch_size=2).device == ACCELERATOR

    write_pngs(tmp_path / "imgs", 2, mode="L")
    a, b = sorted(str(p) for p in (tmp_path / "imgs").glob("*.png"))
    before = accelerator.ops
    for argv in (["sample", str(tmp_path / "run"), "-n", "5", "--batch-size", "2", "-o", str(tmp_path / "s.png")],
                 ["sample", str(tmp_path / "run"), "-n", "3", "-o", str(tmp_path / "samples")],
                 ["reconstruct", str(tmp_path / "run"), a, b, "-o", str(tmp_path / "rec")],
                 ["interpolate", str(tmp_path / "run"), a, b, "--steps", "4", "-o", str(tmp_path / "i.png")],
                 ["evaluate", str(tmp_path / "run"), "--num-samples", "10", "--pairs", "6", "--ref-images", "12",
                  "--neighbours", "2", "--batch-size", "4", "--quiet"],
                 ["calibrate", "--data", "faces", "--config", str(tmp_path / "run" / "config.json"), "--steps",
                  "2", "--quiet"],
                 ["demo", "--steps", "4", "--out", str(tmp_path / "demo"), "--quiet"]):
        assert main(argv + ["--device", "cuda"]) == 0, (argv, capsys.readouterr().err)
        assert accelerator.ops > before, argv  # the work ran on the accelerator
        before = accelerator.ops
    result = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["device"] == "meta" and result["metrics"]["fid"]["samples"] == 10
    assert (tmp_path / "demo" / "samples.png").is_file() and (tmp_path / "rec").is_dir()


def test_the_explorer_behind_serve_runs_on_the_accelerator(tmp_path, faces16, accelerator):
    from PIL import Image

    from introvae.explore import Explorer

    _train(tmp_path / "run", faces16, device="cpu").train()
    for k in range(2):
        Image.fromarray((faces16.train[k, 0].numpy())).resize((40, 30)).convert("RGB").save(tmp_path / f"{k}.png")
    ex = Explorer(tmp_path / "run", device="cuda")
    assert ex.model.device == ACCELERATOR
    before = accelerator.ops
    ex.samples(seed=1, n=4)
    ex.reconstruct([tmp_path / "0.png"])
    ex.interpolate(tmp_path / "0.png", tmp_path / "1.png", 0.3)
    ex.strip(tmp_path / "0.png", tmp_path / "1.png", 4)
    ex.edit(tmp_path / "0.png", [1.0, -1.0])
    ex.neighbours(seed=0, n=2, k=2)
    assert accelerator.ops > before  # the work ran on the accelerator, with no host tensor mixed in


def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for argv in (["train", "--data", "faces", "--steps", "1", "--device", "cuda", "--out", str(tmp_path / "r")],
                 ["demo", "--steps", "1", "--device", "cuda:1", "--out", str(tmp_path / "d")],
                 ["sample", str(tmp_path), "-o", "x.png", "--device", "cuda"],
                 ["evaluate", str(tmp_path), "--data", "faces", "--image-size", "16", "--device", "cuda:0"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "asked for, but this machine has no CUDA device" in err, err


def test_features_are_true_fp32_on_a_gpu_and_the_settings_come_back():
    """TF32 may speed up fp32 training on a GPU, never an FID: the feature pass turns it off, then restores it."""
    from introvae.devices import true_fp32

    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
    try:
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = True
        with true_fp32(torch.device("cuda")):  # only flags: no CUDA device needed
            assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32) == (False, False)
        assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32) == (True, True)
        with true_fp32(torch.device("cpu")):  # nothing to change on a CPU
            assert b.cuda.matmul.allow_tf32
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = saved


def test_training_on_a_gpu_turns_on_cudnn_benchmark_and_tf32(monkeypatch):
    from introvae.devices import training_backends

    b = torch.backends
    saved = (b.cudnn.benchmark, b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
    try:
        b.cudnn.benchmark = b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = False
        training_backends(torch.device("cpu"))
        assert not b.cudnn.benchmark
        training_backends(torch.device("cuda"))
        assert b.cudnn.benchmark and b.cuda.matmul.allow_tf32 and b.cudnn.allow_tf32
    finally:
        b.cudnn.benchmark, b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = saved


def test_the_fid_cache_key_knows_the_device_kind():
    from introvae.metrics.fid import stats_key

    args = dict(data="faces", split="train", n=10, image_size=16, in_channels=1)
    cpu = stats_key(**args)
    assert stats_key(**args, device="cpu") == cpu  # keys of earlier versions still hit on a CPU
    assert stats_key(**args, device="cuda") not in (cpu, stats_key(**args, device="cuda", precision="bf16"))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_step_that_does_not_log_reads_nothing_on_the_host(tmp_path, faces16, accelerator, precision):
    """On a GPU every host read waits for the device. A training step that writes no stats line makes none (the
    guard's counters, the margin's average, the loss sums and fp16's GradScaler stay on the device); a logging step
    makes a few. bf16 and fp16 run under the stand-in's emulated autocast (tests/fake_accelerator.py)."""
    cfg = tiny_config(steps=8, log_every=4, image_every=100, checkpoint_every=0, checkpoint_minutes=0,
                      margin="auto", vae_steps=2, ema=0.9, max_bad_steps=2, device="cuda", precision=precision)
    t = Trainer(cfg, tmp_path / "run", data=faces16, show_progress=False, log=lambda s: None)
    reads_at = {}
    advance = t.run.advance

    def advance_and_count(used):  # called once per step, right after the step's update
        advance(used)
        reads_at[t.run.step] = accelerator.host_reads

    t.run.advance = advance_and_count
    t.train()
    assert t.run.precision.name == precision and (precision == "fp16") == (t.run.precision.scaler is not None)
    assert accelerator.ops > 0 and t.guard.longest_run() == 0  # it trained on the device, no step skipped
    per_step = {k: reads_at[k] - reads_at[k - 1] for k in range(2, 9)}
    # between the logging steps 4 and 8: steps 5, 6, 7 read nothing (their reads show up at the next step's count)
    quiet = [per_step[k] for k in (2, 3, 4, 6, 7)]  # reads made between step k-1's update and step k's: none logs
    assert quiet == [0, 0, 0, 0, 0], (per_step, accelerator.read_ops)
    # the log line of step 4 (between step 4's and step 5's update): two copies to the host, the stats line's
    # values and the guard's counters, and under fp16 a third, the GradScaler's scale for the fp16_scale column
    assert per_step[5] == (3 if precision == "fp16" else 2) and per_step[8] == 0, accelerator.read_ops


def test_a_2d_run_stopped_on_the_accelerator_resumes_there_as_if_never_stopped(tmp_path, accelerator, capsys):
    """A 2D density run's checkpoint holds the parts' device tensors; resumed, they go back to the device and the
    run ends as one never stopped (the same weights as on the CPU)."""
    argv = ["train", "--data", "8gaussians", "--objective", "introvae", "--steps", "6", "--vae-steps", "2",
            "--batch-size", "32", "--log-every", "2", "--checkpoint-every", "2", "--quiet"]
    assert main(argv + ["--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    with pytest.raises(SystemExit), a_2d_run_killed_after_checkpoint(4):
        main(argv + ["--device", "cuda", "--out", str(tmp_path / "gpu")])
    ops = accelerator.ops
    assert main(["train", "--resume", str(tmp_path / "gpu"), "--device", "cuda", "--quiet"]) == 0
    assert f"resuming {tmp_path / 'gpu'} at step 4 of 6" in capsys.readouterr().out and accelerator.ops > ops
    a = torch.load(tmp_path / "cpu" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "gpu" / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k].cpu(), rtol=1e-5, atol=1e-6) for k in a)
